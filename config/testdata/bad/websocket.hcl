upstream "u" {
  servers = ["127.0.0.1:9001"]
}

route "no-ws" {
  upstream    = "u"
  max_tunnels = 5
}

route "answer" {
  websocket = true
  respond {
    status = 200
  }
}

route "bad-values" {
  upstream            = "u"
  websocket           = "yes"
  max_tunnels         = -1
  tunnel_idle_timeout = "forever"
}

upstream "plain-tls" {
  servers         = ["127.0.0.1:9001"]
  protocol        = "h3"
  tls_server_name = "x"
}

upstream "g" {
  servers  = ["127.0.0.1:9301"]
  protocol = "h2c"
}

route "idem-g" {
  upstream = "g"
  idempotency {}
}
