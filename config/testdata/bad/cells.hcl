cells "c" {
  key         = "cookie"
  missing_key = "c9"
  cell "x" {
    servers = ["127.0.0.1:1"]
    weight  = -1
  }
  cell "x" {
    servers = ["127.0.0.1:2"]
  }
}
cells "empty" {
  key = "ip"
}
