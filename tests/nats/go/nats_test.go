// The official Go client (github.com/nats-io/nats.go) against `ringbrokerd --nats`.
// scripts/test-nats starts two daemons and passes their addresses:
// RINGBROKER_NATS_URL (no auth) and RINGBROKER_NATS_AUTH_URL (token "s3cret", user
// "alice" with password "pw"). Proves pub/sub with wildcards, queue groups,
// request-reply with timeout, headers, no-responders, auto-unsubscribe and auth.
package nats_test

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

const wait = 5 * time.Second

func url(t *testing.T, name string) string {
	t.Helper()
	u := os.Getenv(name)
	if u == "" {
		t.Fatalf("%s is not set: run through scripts/test-nats", name)
	}
	return u
}

func connect(t *testing.T, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url(t, "RINGBROKER_NATS_URL"), opts...)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func next(t *testing.T, sub *nats.Subscription) *nats.Msg {
	t.Helper()
	m, err := sub.NextMsg(wait)
	if err != nil {
		t.Fatalf("next message on %s: %v", sub.Subject, err)
	}
	return m
}

func TestPubSubWithWildcards(t *testing.T) {
	nc := connect(t)
	users, _ := nc.SubscribeSync("user.>")
	shipped, _ := nc.SubscribeSync("orders.*.shipped")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pub := connect(t)
	for _, s := range []string{"user.1", "user.2.login", "orders.eu.shipped", "orders.eu.x.shipped", "user"} {
		if err := pub.Publish(s, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if got := next(t, users); got.Subject != "user.1" || string(got.Data) != "user.1" {
		t.Fatalf("got %s %q", got.Subject, got.Data)
	}
	if got := next(t, users); got.Subject != "user.2.login" {
		t.Fatalf("got %s", got.Subject)
	}
	if got := next(t, shipped); got.Subject != "orders.eu.shipped" {
		t.Fatalf("got %s", got.Subject)
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	if m, err := shipped.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("unexpected %s", m.Subject)
	}
	if m, err := users.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("unexpected %s", m.Subject)
	}
}

func TestQueueGroupSharesMessages(t *testing.T) {
	const total = 200
	var mu sync.Mutex
	counts := map[int]int{}
	done := make(chan struct{})
	received := 0
	for i := 0; i < 2; i++ {
		member := i
		nc := connect(t)
		_, err := nc.QueueSubscribe("jobs.new", "workers", func(m *nats.Msg) {
			mu.Lock()
			defer mu.Unlock()
			counts[member]++
			received++
			if received == total {
				close(done)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	pub := connect(t)
	for i := 0; i < total; i++ {
		if err := pub.Publish("jobs.new", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatalf("only %d of %d delivered", received, total)
	}
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if counts[0]+counts[1] != total || counts[0] == 0 || counts[1] == 0 {
		t.Fatalf("each message once, shared by both members: %v", counts)
	}
}

func TestRequestReplyAndTimeout(t *testing.T) {
	responder := connect(t)
	if _, err := responder.Subscribe("svc.echo", func(m *nats.Msg) {
		_ = m.Respond(append([]byte("echo: "), m.Data...))
	}); err != nil {
		t.Fatal(err)
	}
	// Subscribed, never answers.
	if _, err := responder.SubscribeSync("svc.silent"); err != nil {
		t.Fatal(err)
	}
	if err := responder.Flush(); err != nil {
		t.Fatal(err)
	}
	nc := connect(t)
	for i := 0; i < 20; i++ {
		reply, err := nc.Request("svc.echo", []byte(fmt.Sprint(i)), wait)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if string(reply.Data) != fmt.Sprintf("echo: %d", i) {
			t.Fatalf("reply %q", reply.Data)
		}
	}
	start := time.Now()
	_, err := nc.Request("svc.silent", []byte("x"), 300*time.Millisecond)
	if !errors.Is(err, nats.ErrTimeout) {
		t.Fatalf("want timeout, got %v", err)
	}
	if time.Since(start) < 250*time.Millisecond {
		t.Fatalf("timed out too early: %v", time.Since(start))
	}
	// The old request style: a subscription per request, unsubscribed after one.
	old := connect(t, nats.UseOldRequestStyle())
	reply, err := old.Request("svc.echo", []byte("old"), wait)
	if err != nil {
		t.Fatalf("old style: %v", err)
	}
	if string(reply.Data) != "echo: old" {
		t.Fatalf("old style reply %q", reply.Data)
	}
}

func TestNoResponders(t *testing.T) {
	nc := connect(t)
	start := time.Now()
	_, err := nc.Request("nobody.home", []byte("?"), wait)
	if !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("want no responders, got %v", err)
	}
	if time.Since(start) > wait/2 {
		t.Fatalf("no responders should be at once, took %v", time.Since(start))
	}
}

func TestHeaders(t *testing.T) {
	nc := connect(t)
	sub, _ := nc.SubscribeSync("with.headers")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("with.headers")
	m.Header.Set("Trace-Id", "7f3a")
	m.Header.Add("Tag", "a")
	m.Header.Add("Tag", "b")
	m.Data = []byte("payload")
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	got := next(t, sub)
	if got.Header.Get("Trace-Id") != "7f3a" || len(got.Header.Values("Tag")) != 2 || string(got.Data) != "payload" {
		t.Fatalf("headers %v data %q", got.Header, got.Data)
	}
}

func TestAutoUnsubscribe(t *testing.T) {
	nc := connect(t)
	sub, _ := nc.SubscribeSync("limited")
	if err := sub.AutoUnsubscribe(3); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		_ = nc.Publish("limited", []byte("x"))
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		next(t, sub)
	}
	if _, err := sub.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatal("a fourth message arrived")
	}
}

func TestAuth(t *testing.T) {
	u := url(t, "RINGBROKER_NATS_AUTH_URL")
	if nc, err := nats.Connect(u, nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("connected without credentials")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("want authorization violation, got %v", err)
	}
	if nc, err := nats.Connect(u, nats.Token("wrong"), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("connected with a wrong token")
	}
	token, err := nats.Connect(u, nats.Token("s3cret"))
	if err != nil {
		t.Fatalf("token: %v", err)
	}
	defer token.Close()
	user, err := nats.Connect(u, nats.UserInfo("alice", "pw"))
	if err != nil {
		t.Fatalf("user/password: %v", err)
	}
	defer user.Close()
	sub, _ := token.SubscribeSync("secured")
	if err := token.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := user.Publish("secured", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if got := next(t, sub); string(got.Data) != "hi" {
		t.Fatalf("got %q", got.Data)
	}
}
