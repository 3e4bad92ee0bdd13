upstream "shop" { servers = ["127.0.0.1:9001"] }

route "a" {
  match { path = "/a" }
  upstream = "shop"
}

waiting_room "no-rate" {
  routes = ["a"]
}

waiting_room "bad" {
  routes     = ["a", "missing"]
  admit_rate = "fast"
  store      = "redis"
  opens_at   = "tomorrow"
  page       = "no-such-page.html"
  secret     = "short"
  session    = "0s"
  adaptive {
    min_rate        = "10r/s"
    max_error_ratio = 2
  }
}

waiting_room "nothing" {}
