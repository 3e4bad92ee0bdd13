upstream "a" {
  servers = ["127.0.0.1:1"]
}
upstream "a" {
  servers = ["127.0.0.1:2"]
}
upstream "b" {
  servers = []
}
route "r" {
  upstream = "missing"
}
route "r" {
  upstream = "a"
}
route "o" {
  cells = "nowhere"
  require_token = true
}
route "two" {
  upstream = "a"
  seckill  = true
}
route "none" {
  match { path = "/none" }
}
route "idem" {
  match { path = "/idem" }
  respond { status = 200 }
  idempotency {
    wait        = "0s"
    lease       = "soon"
    max_entries = 0
  }
}
