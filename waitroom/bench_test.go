package waitroom

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// benchRoom returns a paused room on st with n waiting users who have polled once.
func benchRoom(b *testing.B, st Store, n int) (*Room, []*user) {
	r := nodes(b, 1, "bench", st, options(1000), nil)[0]
	if err := r.SetPaused(true); err != nil {
		b.Fatal(err)
	}
	waitFor(b, 2*time.Second, "the pause", func() bool { return r.Stats().Paused })
	users := make([]*user, n)
	for i := range users {
		users[i] = newUser("", i)
		if v := users[i].poll(r); v.Err != nil || v.Admitted {
			b.Fatalf("join %d: %+v", i, *v)
		}
	}
	return r, users
}

// BenchmarkPoll: waiting users polling (the place cookie known to the node), in parallel.
func BenchmarkPoll(b *testing.B) {
	for _, kind := range []string{"memory", "redis"} {
		b.Run(kind, func(b *testing.B) {
			var st Store = NewMemoryStore()
			if kind == "redis" {
				_, st = newRedis(b)
			}
			r, users := benchRoom(b, st, 10000)
			var next atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var out Verdict
				for pb.Next() {
					u := users[int(next.Add(1))%len(users)]
					v := Visit{Client: u.ip, PlaceCookie: u.place, Now: time.Now()}
					r.Check(&v, &out)
					if out.Admitted || out.Err != nil || out.Position < 1 {
						b.Fatalf("poll: %+v", out)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "polls/s")
		})
	}
}

// BenchmarkAdmitted: requests of admitted users (cookie checked locally).
func BenchmarkAdmitted(b *testing.B) {
	r := nodes(b, 1, "bench", NewMemoryStore(), options(1000), nil)[0]
	sign := r.cfg.Load().sign
	cookies, keys := make([][]byte, 1000), make([][]byte, 1000)
	for i := range cookies {
		keys[i] = []byte("user" + strconv.Itoa(i))
		cookies[i] = sign.admit(int64(i+1), keys[i], time.Now().Add(time.Minute).UnixMilli())
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var out Verdict
		for pb.Next() {
			i := int(next.Add(1)) % len(cookies)
			v := Visit{Key: keys[i], AdmitCookie: cookies[i], Now: time.Now()}
			r.Check(&v, &out)
			if !out.Admitted {
				b.Fatalf("admitted user refused: %+v", out)
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "checks/s")
}
