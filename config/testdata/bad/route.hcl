upstream "a" {
  servers = ["127.0.0.1:1", "localhost", "h:99999"]
  timeout = 5
}
route "r" {
  match {
    path    = "x"
    methods = ["FETCH", "GET"]
    header  = { "Bad Name" = "1" }
  }
  upstream = "a"
  limit "l" {
    key  = "path:0"
    rate = "5 per sec"
  }
  limit "l" {
    key  = "ip"
    rate = "5r/s"
  }
  limit "nokey" {
    burst = 0
  }
  limit "scope" {
    key   = ["header:X-User-Id", "weird:x"]
    rate  = "1r/d"
    scope = "galaxy"
  }
  cache {
    ttl      = "-1s"
    statuses = [200, 700]
  }
  reject {
    status = 1000
    colour = "red"
  }
  priority = "urgent"
  frobnicate {}
}
