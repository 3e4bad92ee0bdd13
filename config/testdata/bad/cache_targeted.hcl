upstream "o" {
  servers = ["127.0.0.1:9000"]
}

route "a" {
  upstream = "o"
  cache {
    targeted = ["Edge-Cache-Control", "Cache-Control"]
  }
}

route "b" {
  match { path = "/b" }
  upstream = "o"
  cache {
    targeted = ["Edge Cache"]
  }
}

route "c" {
  match { path = "/c" }
  upstream = "o"
  cache {
    targeted = ["A", "B", "C", "D", "E"]
  }
}

route "d" {
  match { path = "/d" }
  upstream = "o"
  cache {
    targeted         = ["CDN-Cache-Control", "cdn-cache-control"]
    forward_targeted = "yes"
  }
}
