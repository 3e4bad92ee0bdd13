// Package waitroom is the seckill waiting room: a fair queue in front of the routes of
// a sale, one queue across every edge node, admitting users at the rate the protected
// upstreams can serve. The package imports nothing of edge; the proxy codes against the
// types of waitroom.go (Options, Visit, Verdict, Stats, the errors) and Room.
//
// # How it works
//
// A place is a number from one counter (INCR-like, in one Lua script), so arrival order is
// exact whichever node a user hits. The serving counter only moves forward, one tick
// (~100ms) at a time, on the one node holding the leader lease; each tick is one atomic
// script that admits the places it passes whose users polled within Session and skips the
// others (given up), never beyond Options.MaxActive users active. A user is admitted when
// the counter has passed their place: they get a signed admission cookie that every node
// checks locally (HMAC-SHA256 of room, key, place and expiry; no store call, no
// allocation) and that is re-signed after half a Session, sliding its expiry.
//
// Polls are cheap: a node answers a user it answered within half a Session, who is still
// behind the serving counter, from its memory and a snapshot of the shared counters
// refreshed every ~200ms; their "still here" marks (and admitted users') are sent in one
// script call per ~500ms. Only a newcomer, a user new to this node, or one the counter
// reached costs one store call. Positions shown by one node never grow; two nodes'
// snapshots may differ by one refresh, so a user moving between nodes may see their
// position move back by what one refresh admits.
//
// # Redis key layout
//
// All keys carry the room's hash tag, {room} (braces in the name become parentheses), so
// every script works on a Redis Cluster. Scripts are in scripts/, each documenting its
// arguments; scripts/common.lua documents the keys:
//
//	wr:{room}:state   hash    tail, serving, admitted, paused, rate, inforce, reason, preseq, drawn, seed
//	wr:{room}:lock    string  the leader lease: SET NX PX by a node, renewed by each tick
//	wr:{room}:seen    zset    waiting place -> last seen ms (given up once older than Session)
//	wr:{room}:active  zset    admitted place -> last seen ms (dropped once older than Session)
//	wr:{room}:owner   hash    place (or -ticket) -> client address and identity
//	wr:{room}:keys    hash    identity ("k"+key, "t"+ticket) -> place, or -ticket before the draw
//	wr:{room}:ips     hash    client address -> places held (Options.MaxPerIP)
//	wr:{room}:early   zset    pre-queue: identity -> ticket, arrived before OpensAt
//	wr:{room}:late    zset    pre-queue: identity -> ticket, arrived after OpensAt, before the draw
//
// The state is bounded: the leader drops given-up places and expired admissions every
// tick, and every key but the lease expires after 24h plus Session without a write.
//
// # Scheduled sales
//
// With Options.OpensAt, arrivals before the draw get a pre-queue ticket (Verdict.PreQueue,
// position 0). At the opening the leader lists the pre-queue, shuffles the early arrivals
// with DrawOrder and a seed it logs ("pre-queue drawn", Stats.Seed), and one script gives
// them places, then the later arrivals theirs in arrival order; the script refuses a second
// draw of the same opening and a pre-queue that changed since it was listed.
//
// # Failures
//
// The store unreachable (a call fails, or the snapshot is older than 1.5s): Check returns
// ErrUnavailable, or admits without a cookie when the room fails open; users holding an
// admission cookie are not affected. A leader that dies leaves its lease to expire (1.5s);
// one that closes gives it up at once. A tick is atomic, so nobody is admitted twice. A
// Redis failover or restart may lose recent state: users then join again (at the end).
package waitroom
