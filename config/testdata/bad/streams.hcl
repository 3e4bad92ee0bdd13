listen = "127.0.0.1:8080"

upstream "db" {
  servers        = ["127.0.0.1:3306"]
  proxy_protocol = "v3"
}

cells "shop" {
  key = "ip"
  cell "a" { servers = ["127.0.0.1:9001"] }
}

stream "no-listen" {
  upstream = "db"
}

stream "nowhere" {
  listen = "127.0.0.1:7001"
}

stream "both" {
  listen   = "127.0.0.1:7002"
  upstream = "db"
  cells    = "shop"
}

stream "unknown" {
  listen   = "127.0.0.1:7003"
  upstream = "nope"
  protocol = "sctp"
}

stream "clash" {
  listen   = "127.0.0.1:8080"
  upstream = "db"
}

stream "udp-sni" {
  listen         = "127.0.0.1:7004"
  protocol       = "udp"
  proxy_protocol = true
  sni "a.example.com" { upstream = "db" }
}

stream "bad-sni" {
  listen = "127.0.0.1:7005"
  sni "a.*.example.com" { upstream = "db" }
  sni "b.example.com" {}
  sni "B.example.com" { upstream = "missing" }
  conn_rate        = "fast"
  max_conns_per_ip = -1
  idle_timeout     = "never"
}

listener "pp" {
  address        = "127.0.0.1:8443"
  proxy_protocol = "yes"
}

upstream "pp" {
  servers        = ["127.0.0.1:3307"]
  proxy_protocol = "v1"
}

upstream "pp-h2" {
  servers        = ["127.0.0.1:3308"]
  protocol       = "h2c"
  proxy_protocol = "v2"
}

route "http-to-pp" {
  match { path = "/" }
  upstream = "pp"
}

stream "udp-pp" {
  listen   = "127.0.0.1:7006"
  protocol = "udp"
  upstream = "pp"
}
