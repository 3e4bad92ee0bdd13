# The L4 examples of SPEC.md and docs/streams-l4.md.
trusted_proxies = ["10.0.0.0/8"]

upstream "db" {
  servers        = ["10.0.0.31:3306", "10.0.0.32:3306"]
  proxy_protocol = "v2"
}
upstream "api-tls" { servers = ["10.0.0.41:443"] }
upstream "web-tls" { servers = ["10.0.0.42:443"] }
upstream "default-tls" { servers = ["10.0.0.43:443"] }
upstream "dns" { servers = ["10.0.0.53:53"] }

cells "shop" {
  key = "ip"
  cell "c1" { servers = ["10.0.1.1:8080"] }
  cell "c2" { servers = ["10.0.1.2:8080"] }
}

listener "lb" {
  address        = "0.0.0.0:8081"
  proxy_protocol = true
}

stream "mysql" {
  listen           = "0.0.0.0:3306"
  protocol         = "tcp"
  upstream         = "db"
  proxy_protocol   = true
  idle_timeout     = "10m"
  max_conns_per_ip = 100
  conn_rate        = "20r/s"
  conn_burst       = 40
}

stream "tls-passthrough" {
  listen = "0.0.0.0:8443"
  sni "api.shop.example.com" { upstream = "api-tls" }
  sni "*.shop.example.com"   { upstream = "web-tls" }
  upstream = "default-tls"
}

stream "mqtt" {
  listen = "0.0.0.0:1883"
  cells  = "shop"
}

stream "dns" {
  listen       = "0.0.0.0:5353"
  protocol     = "udp"
  upstream     = "dns"
  max_sessions = 5000
}
