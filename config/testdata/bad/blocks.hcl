admin {
  listen = "0.0.0.0:9901"
}
admin {
  listen = "127.0.0.1:9902"
}
blacklist {
  ips = ["10.0.0.0/8", "300.1.1.1"]
  auto_ban {
    rejects = 0
  }
}
seckill {
  store  = "redis"
  secret = "short"
}
cluster {
  bind   = "nowhere"
  secret = "abc"
}
route "x" {
  match { path = "/x" }
  respond { status = 200 }
  limit "l" {
    key   = "ip"
    rate  = "1r/s"
    scope = "redis"
  }
}

tls_tickets {
}
