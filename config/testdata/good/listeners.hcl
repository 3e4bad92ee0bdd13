listen = ""

listener "https" {
  address = "0.0.0.0:8443"
  tls {
    certificate {
      cert_file = "certs/shop.pem"
      key_file  = "certs/shop.key"
    }
    certificate {
      cert_file = "certs/shop-rsa.pem"
      key_file  = "certs/shop-rsa.key"
    }
    min_version = "1.3"
  }
  hsts                    = "365d"
  hsts_include_subdomains = true
  http2 {
    max_concurrent_streams = 64
    initial_window_size    = "1MB"
    ping_interval          = "5s"
  }
  protocols = ["h2", "http/1.1", "h3"]
  http3 {
    max_streams      = 50
    max_conns_per_ip = 20
    retry_threshold  = 0
    early_data       = true
  }
}

listener "http" {
  address        = "0.0.0.0:8080"
  https_redirect = true
}

listener "internal" {
  address   = "127.0.0.1:8081"
  protocols = ["h2c", "http/1.1"]
}

upstream "u" {
  servers = ["127.0.0.1:9001"]
}

route "public" {
  match {
    listener = "https"
  }
  upstream = "u"
}

route "feed" {
  match { path = "/events" }
  upstream            = "u"
  websocket           = true
  max_tunnels         = 50000
  tunnel_idle_timeout = "2m"
}

upstream "grpc-api" {
  servers         = ["127.0.0.1:9301"]
  protocol        = "h2"
  tls_server_name = "api.internal"
}

listener "auto" {
  address = "127.0.0.1:8446"
  tls {
    acme {
      domains   = ["shop.example.com", "www.shop.example.com"]
      email     = "ops@example.com"
      directory = "https://acme-staging-v02.api.letsencrypt.org/directory"
    }
  }
}

tls_tickets {
  secret = env("TEST_TLS_TICKET_SECRET", "a ticket secret of 32 bytes or more")
}
