route "hello" {
  respond {
    status = 200
    body   = "hello"
  }
}
