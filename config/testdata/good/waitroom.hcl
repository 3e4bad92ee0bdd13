# The waiting room of SPEC.md, with edge's additions.
upstream "shop" { servers = ["127.0.0.1:9001"] }

seckill {
  store  = "redis"
  secret = "0123456789abcdef0123456789abcdef"
  redis { addrs = ["127.0.0.1:6379"] }
}

route "seckill" {
  match { path = "/seckill/" }
  seckill = true
}
route "order" {
  match { path = "/order/" }
  upstream      = "shop"
  require_token = true
}

waiting_room "sale" {
  routes     = ["seckill", "order"]
  key        = "header:X-User-Id"
  admit_rate = "500r/s"
  max_active = 20000
  session    = "5m"
  store      = "redis"
  opens_at   = "2026-12-12T20:00:00+08:00"
  max_per_ip = 5
  adaptive {
    min_rate       = "50r/s"
    latency_target = "300ms"
  }
}
