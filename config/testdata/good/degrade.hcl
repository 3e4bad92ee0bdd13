upstream "catalog" {
  servers      = ["127.0.0.1:9001"]
  max_inflight = 500
  breaker {
    window         = "10s"
    min_requests   = 20
    failure_ratio  = 0.5
    slow_ratio     = 0.8
    slow_threshold = "500ms"
    cool_off       = "5s"
    probes         = 3
  }
}
cells "shop" {
  key = "header:X-User-Id"
  cell "c1" { servers = ["127.0.0.1:9101"] }
  breaker {}
}
overload {
  max_inflight = 10000
  low          = 0.6
  normal       = 0.85
}
route "orders" {
  match { path = "/api/orders" }
  cells        = "shop"
  priority     = "core"
  max_inflight = 2000
  fallback {
    status = 503
    body   = "{\"code\":503,\"msg\":\"ordering is busy, retry in a moment\"}"
  }
}
route "reviews" {
  match { path = "/reviews/" }
  upstream = "catalog"
  priority = "low"
}
