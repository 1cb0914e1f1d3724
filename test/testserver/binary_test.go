package testserver

import (
	"fmt"
	"strings"
	"testing"
)

// recordingTB records Skip and Fatal instead of stopping the test.
type recordingTB struct {
	testing.TB
	skipped, fatal string
}

func (r *recordingTB) Skip(args ...any)  { r.skipped = fmt.Sprint(args...) }
func (r *recordingTB) Fatal(args ...any) { r.fatal = fmt.Sprint(args...) }

func TestBinaryMissing(t *testing.T) {
	t.Setenv("CI", "")
	tb := &recordingTB{TB: t}
	Binary(tb, "microhost-no-such-server", "some-package")
	if !strings.Contains(tb.skipped, `install the "some-package" package`) || tb.fatal != "" {
		t.Errorf("outside CI: skipped %q, fatal %q; want a skip naming the package", tb.skipped, tb.fatal)
	}

	t.Setenv("CI", "true")
	tb = &recordingTB{TB: t}
	Binary(tb, "microhost-no-such-server", "some-package")
	if !strings.Contains(tb.fatal, `install the "some-package" package`) || tb.skipped != "" {
		t.Errorf("in CI: skipped %q, fatal %q; want a failure naming the package", tb.skipped, tb.fatal)
	}
}

func TestBinaryFound(t *testing.T) {
	if p := Binary(t, "sh", "dash"); p == "" {
		t.Fatal("sh not found")
	}
}
