admin {
  token = env("EDGE_TEST_SURELY_UNSET")
}
seckill {
  secret = env("EDGE_TEST_SURELY_UNSET", "a-default-that-is-long-enough-for-hmac-32")
}
