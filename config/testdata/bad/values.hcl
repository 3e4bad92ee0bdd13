listen = "nope"
trusted_proxies = ["1.2.3.4/99", "x"]
shutdown_timeout = "soon"
cache_size = "12MB"
max_body_size = "lots"
max_conns = 0
bogus = 1
