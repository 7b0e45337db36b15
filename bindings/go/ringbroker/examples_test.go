package ringbroker

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// exampleRunMax bounds one run of an example program.
const exampleRunMax = 60 * time.Second

// goTool is the go command that runs these tests.
func goTool(t *testing.T) string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(p); err != nil {
		t.Fatalf("no go command found: %v", err)
	}
	return p
}

// The programs in examples/go build, and run to completion embedded and against the
// test daemon, printing what each promises.
func TestExamples(t *testing.T) {
	bin := t.TempDir()
	build := exec.Command(goTool(t), "build", "-o", bin+string(filepath.Separator), "./...")
	build.Dir = filepath.Join("..", "..", "..", "examples", "go")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building examples/go: %v\n%s", err, out)
	}
	expect := map[string][]string{
		"taskqueue":     {"tasks confirmed", "100 tasks done by 2 workers"},
		"requestreply":  {"200 concurrent requests, each got its own reply", "with no responder: ringbroker: NO_RESPONDERS", "with a silent responder: context deadline exceeded"},
		"consumergroup": {"200 orders stored in 4 partitions", "200 orders processed by 2 members"},
	}
	for name, lines := range expect {
		for _, mode := range []struct{ name, url string }{{"embedded", ""}, {"remote", daemonURL}} {
			t.Run(name+"/"+mode.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), exampleRunMax)
				defer cancel()
				var args []string
				if mode.url != "" {
					args = []string{"-url", mode.url}
				}
				out, err := exec.CommandContext(ctx, filepath.Join(bin, name), args...).CombinedOutput()
				if err != nil {
					t.Fatalf("%s %v: %v\n%s", name, args, err, out)
				}
				for _, line := range lines {
					if !strings.Contains(string(out), line) {
						t.Fatalf("%s %v did not print %q:\n%s", name, args, line, out)
					}
				}
			})
		}
	}
}
