listen = "127.0.0.1:8080"

listener "default" {
  address = "127.0.0.1:8443"
}

listener "plain" {
  address   = "127.0.0.1:8080"
  protocols = ["h2", "http/1.1", "http/1.1"]
  hsts      = "365d"
}

listener "secure" {
  address        = "127.0.0.1:9443"
  https_redirect = true
  hsts           = "forever"
  tls {
    min_version = "1.1"
  }
}

listener "nameless" {
  tls {
    certificate {
      cert_file = "a.pem"
    }
  }
  http2 {
    max_concurrent_streams = 0
    bogus = 1
  }
}

upstream "u" {
  servers = ["127.0.0.1:9001"]
}

route "r" {
  match {
    listener = "nope"
  }
  upstream = "u"
}

listener "acme-bad" {
  address = "127.0.0.1:8444"
  tls {
    acme {
      domains   = ["shop.example.com", "bad name"]
      directory = "http://insecure.example/dir"
      storage   = "redis"
    }
  }
}

listener "acme-empty" {
  address = "127.0.0.1:8445"
  tls {
    acme {}
  }
}

listener "h3-plain" {
  address   = "127.0.0.1:8446"
  protocols = ["http/1.1", "h3"]
  http3 {
    retry_threshold = -1
  }
}

listener "h3-alone" {
  address   = "127.0.0.1:8447"
  protocols = ["h3"]
  tls {
    certificate {
      cert_file = "a.pem"
      key_file  = "a.key"
    }
  }
  http3 {
    max_streams = 0
    bogus       = 1
  }
}

listener "http3-without-h3" {
  address = "127.0.0.1:8448"
  tls {
    certificate {
      cert_file = "a.pem"
      key_file  = "a.key"
    }
  }
  http3 {}
}

tls_tickets {
  secret = "short"
}
