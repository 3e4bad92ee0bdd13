upstream "a" {
  servers = ["127.0.0.1:9001"]
  breaker {
    window        = "5ms"
    min_requests  = 0
    failure_ratio = 1.5
    slow_ratio    = "half"
    cool_off      = "soon"
    probes        = 0
    typo          = 1
  }
}
cells "c" {
  key = "ip"
  cell "one" { servers = ["127.0.0.1:9101"] }
  breaker { slow_ratio = 0 }
}
route "r" {
  upstream     = "a"
  priority     = "vip"
  max_inflight = -1
}
overload {
  low    = 0.9
  normal = 0.7
}
