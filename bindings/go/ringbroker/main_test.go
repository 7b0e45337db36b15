package ringbroker

// The test harness: every scenario runs against an embedded broker and against a
// ringbrokerd this process starts on a free loopback port and stops by pid.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync/atomic"
	"testing"
	"time"
)

// daemonURL is the test daemon's url, set by TestMain.
var daemonURL string

// waitMax bounds every wait in these tests.
const waitMax = 10 * time.Second

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	stop, err := startDaemon()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ringbroker tests:", err)
		return 1
	}
	defer stop()
	return m.Run()
}

// daemonPath is target/debug/ringbrokerd of this checkout, or $RINGBROKERD.
func daemonPath() string {
	if p := os.Getenv("RINGBROKERD"); p != "" {
		return p
	}
	return filepath.Join("..", "..", "..", "target", "debug", "ringbrokerd")
}

var urlPattern = regexp.MustCompile(`ringbroker://127\.0\.0\.1:[0-9]+`)

// startDaemon starts ringbrokerd on an ephemeral loopback port and returns a
// function that stops it by pid and removes its data.
func startDaemon() (func(), error) {
	path := daemonPath()
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("%s is missing: build it with `make -C bindings/go` (or cargo build -p ringbrokerd)", path)
	}
	dir, err := os.MkdirTemp("", "ringbroker-go-daemon-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, "--data-dir", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0",
		"--admin", "off", "--shards", "2")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = os.RemoveAll(dir)
	}
	found := make(chan string, 1)
	go func() { // reads the daemon's output until it exits, so it never blocks on a full pipe
		lines := bufio.NewScanner(out)
		sent := false
		for lines.Scan() {
			if u := urlPattern.FindString(lines.Text()); u != "" && !sent {
				found <- u
				sent = true
			}
		}
	}()
	select {
	case daemonURL = <-found:
		return stop, nil
	case <-time.After(waitMax):
		stop()
		return nil, fmt.Errorf("ringbrokerd printed no url within %v", waitMax)
	}
}

// openEmbedded opens a broker on a temporary directory, closed when t ends.
func openEmbedded(t *testing.T) *Broker {
	t.Helper()
	b, err := Open(Config{DataDir: t.TempDir(), Shards: 2, DisablePinning: true})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// connectRemote connects to the test daemon, closed when t ends.
func connectRemote(t *testing.T) *Broker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitMax)
	defer cancel()
	b, err := Connect(ctx, daemonURL)
	if err != nil {
		t.Fatalf("Connect(%s): %v", daemonURL, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// bothModes runs f as subtest "embedded" on an embedded broker and "remote" on a
// connection to the test daemon.
func bothModes(t *testing.T, f func(t *testing.T, b *Broker)) {
	t.Run("embedded", func(t *testing.T) { f(t, openEmbedded(t)) })
	t.Run("remote", func(t *testing.T) { f(t, connectRemote(t)) })
}

var uniqueCounter atomic.Uint64

// unique makes a name no other test (or earlier run against the daemon) uses.
func unique(prefix string) string {
	return fmt.Sprintf("%s%d%d", prefix, time.Now().UnixNano()%1_000_000_000, uniqueCounter.Add(1))
}

// testCtx is a context bounded by waitMax, cancelled when t ends.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitMax)
	t.Cleanup(cancel)
	return ctx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// within fails t if f takes longer than limit: cancellation must be prompt.
func within(t *testing.T, limit time.Duration, what string, f func()) {
	t.Helper()
	start := time.Now()
	f()
	if took := time.Since(start); took > limit {
		t.Fatalf("%s took %v, more than %v", what, took, limit)
	}
}
