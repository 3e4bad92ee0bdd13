# edge.hcl — the example config. `make run` starts edge with it in front of the
# sample origins (cmd/sample-origin). A test keeps this file valid.
# Reference for every block and attribute: docs/config.md.

listen           = "127.0.0.1:8080"
trusted_proxies  = ["127.0.0.1/32"]   # X-Forwarded-For is believed only from these peers
shutdown_timeout = "10s"
state_dir        = "./state"          # what the admin API changes (bans, …) survives restarts here

# Client-facing bounds (defaults shown).
read_timeout    = "10s"
write_timeout   = "30s"
idle_timeout    = "60s"
max_header_size = "16KB"
max_body_size   = "4MB"
max_conns       = 20000

# The front door: TLS and HTTP/2 beside the plain listen above (docs/tls.md). `make run`
# creates a self-signed certificate for localhost in state/ (paths are relative to this
# file); in production point cert_file/key_file at your real chain and key.
#   curl -k https://localhost:8443/hello            (ALPN picks HTTP/2 when curl has it)
#   curl -ki --http1.1 https://localhost:8443/item/42
listener "https" {
  address   = "127.0.0.1:8443"
  protocols = ["h2", "http/1.1"]        # ALPN offer, in order
  tls {
    certificate {                        # repeat: SNI picks by the names in each certificate;
      cert_file = "state/dev-cert.pem"   # the first answers a missing or unknown name
      key_file  = "state/dev-key.pem"
    }
    min_version = "1.2"
  }
  hsts = "1d"                            # Strict-Transport-Security on every answer (use "365d" once sure)
  http2 {
    max_concurrent_streams = 128
  }
}

# A plain port that only sends browsers to HTTPS (308, same host and path):
# listener "http" {
#   address        = "0.0.0.0:80"
#   https_redirect = true
# }

# Several edges behind one L4 balancer: give them one session-ticket secret, so a
# returning client resumes its TLS session on whichever edge it reaches (docs/tls.md).
# tls_tickets {
#   secret = env("EDGE_TLS_TICKET_SECRET")   # at least 32 bytes, the same on every edge
# }

access_log {
  path   = "stdout"
  format = "json"
}

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

route "hello" {
  match { path = "/hello" }
  respond {
    status = 200
    body   = "{\"hello\":\"from edge\"}"
  }
}

route "detail" {                        # routes are tried in file order; first match wins
  match {
    path    = "/item/"                  # prefix
    methods = ["GET", "HEAD"]
  }
  upstream = "catalog"
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
  store     = "memory"                  # "redis" | "memory" (the embedded default)
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
  priority      = "core"                # shed last under overload
  idempotency {                         # one order per Idempotency-Key, however often it is sent
    header = "Idempotency-Key"
    ttl    = "24h"
  }
}

route "orders" {                        # plain order API: one effect per Idempotency-Key
  match {
    path    = "/api/orders"
    methods = ["POST"]
  }
  upstream = "catalog"
  priority = "core"
  idempotency {
    header = "Idempotency-Key"
    ttl    = "24h"
  }
  fallback {
    status = 503
    body   = "{\"code\":503,\"msg\":\"ordering is busy, retry in a moment\"}"
  }
}

route "catalog" {                       # everything else goes to the catalog
  match { path = "/" }
  upstream = "catalog"
}
