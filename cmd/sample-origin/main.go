// Command sample-origin serves small JSON answers on one or more addresses, so
// that `make run` has something real behind edge. Each answer names the address
// that served it and echoes what edge forwarded.
package main

import (
	"flag"
	"fmt"
	"log"
	"strconv"
	"strings"

	"github.com/valyala/fasthttp"
)

func main() {
	addrs := flag.String("listen", "127.0.0.1:9001,127.0.0.1:9002", "comma-separated addresses to serve on")
	flag.Parse()
	list := strings.Split(*addrs, ",")
	errc := make(chan error, len(list))
	for _, addr := range list {
		addr := strings.TrimSpace(addr)
		go func() { errc <- fasthttp.ListenAndServe(addr, handler(addr)) }()
	}
	log.Printf("sample origins on %s", strings.Join(list, ", "))
	log.Fatal(<-errc)
}

func handler(addr string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		h := &ctx.Request.Header
		ctx.SetContentType("application/json")
		ctx.Response.Header.Set("Cache-Control", "max-age=2")
		fmt.Fprintf(ctx, `{"origin":%s,"method":%s,"path":%s,"x_forwarded_for":%s,"x_real_ip":%s,"x_request_id":%s,"user":%s}`+"\n",
			strconv.Quote(addr), strconv.Quote(string(ctx.Method())), strconv.Quote(string(ctx.Path())),
			strconv.Quote(string(h.Peek("X-Forwarded-For"))), strconv.Quote(string(h.Peek("X-Real-IP"))),
			strconv.Quote(string(h.Peek("X-Request-Id"))), strconv.Quote(string(h.Peek("X-User-Id"))))
	}
}
