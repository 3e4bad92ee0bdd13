# The whole example of SPEC.md, both blocks, as written there.
listen           = "127.0.0.1:8080"
trusted_proxies  = ["127.0.0.1/32"]   # X-Forwarded-For is believed only from these peers
shutdown_timeout = "10s"
state_dir        = "./state"          # what the admin API changes (bans, …) survives restarts here

admin {
  listen = "127.0.0.1:9901"
  token  = env("EDGE_ADMIN_TOKEN")     # Bearer token for every mutating endpoint
}

upstream "catalog" {
  servers = ["127.0.0.1:9001", "127.0.0.1:9002"]
  timeout = "2s"
}

cells "shop" {                          # unit cells, chosen by consistent hash of key
  key         = "header:X-User-Id"
  missing_key = "reject"                # "reject" (400) | "any" | a cell name
  cell "c1" { servers = ["127.0.0.1:9101"] }
  cell "c2" { servers = ["127.0.0.1:9102"] }
  cell "c3" { servers = ["127.0.0.1:9103"] }
}

route "detail" {                        # routes are tried in file order; first match wins
  match {
    path    = "/item/"                  # prefix
    methods = ["GET", "HEAD"]
    # host = "shop.example.com"; query = { day = "today" }; header = { "X-Canary" = "1" }
  }
  upstream = "catalog"                  # or: cells = "shop" | seckill = true | respond { ... }
  cache {
    ttl   = "2s"                        # when the origin sends no Cache-Control max-age
    stale = "30s"                       # serve stale while refreshing / when origin fails
  }
  limit "item" {
    key   = "path:2"
    rate  = "10000r/s"
    burst = 100
  }
  limit "user" {
    key   = "header:X-User-Id"
    rate  = "6r/m"
    burst = 1
  }
  reject {                              # the degraded answer when a limit says no
    status = 429
    body   = "{\"code\":429,\"msg\":\"busy, please retry\"}"
  }
}

blacklist {
  ips      = ["10.0.0.0/8"]
  users    = ["u-banned"]
  user_key = "header:X-User-Id"
  auto_ban {                            # ban a client IP that keeps hitting limits
    rejects = 20
    window  = "10s"
    ban     = "10m"
  }
}

seckill {
  store     = "redis"                   # "redis" | "memory" (the embedded default)
  redis { addrs = ["127.0.0.1:6379"] }  # several addrs of a Redis Cluster also work
  secret    = env("EDGE_SECKILL_SECRET")
  token_ttl = "5m"
  user_key  = "header:X-User-Id"
  item_key  = "path:2"                  # POST /seckill/{item}/token
}

route "seckill" {
  match {
    path    = "/seckill/"
    methods = ["POST"]
  }
  seckill = true
}

route "order" {
  match {
    path    = "/order/"
    methods = ["POST"]
  }
  cells         = "shop"
  require_token = true                  # X-Seckill-Token must be valid for this user and item
}
route "orders" {
  match { path = "/api/orders" }
  cells        = "shop"
  priority     = "core"                 # "core" | "normal" | "low": shed order under overload
  max_inflight = 2000                   # bulkhead: beyond it, the fallback at once
  fallback {                            # the answer when degraded, broken or shed
    status = 503
    body   = "{\"code\":503,\"msg\":\"ordering is busy, retry in a moment\"}"
  }
  idempotency {
    header   = "Idempotency-Key"
    ttl      = "24h"
    methods  = ["POST"]
    user_key = "header:X-User-Id"       # keys are per user; the client IP when empty
  }
}

cluster {
  name = "edge-prod"
  bind = "10.0.0.5:7946"
  join = ["10.0.0.6:7946", "10.0.0.7:7946"]
}
