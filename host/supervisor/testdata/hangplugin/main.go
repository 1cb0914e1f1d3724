// Command hangplugin never completes the plugin handshake, and leaves a
// child holding its output, as a broken wrapper script would.
package main

import (
	"os"
	"os/exec"
	"strconv"
	"time"
)

func main() {
	child := exec.Command("sleep", "600")
	child.Stdout, child.Stderr = os.Stdout, os.Stderr
	if err := child.Start(); err != nil {
		panic(err)
	}
	os.WriteFile(os.Getenv("HANG_CHILD_PID_FILE"), []byte(strconv.Itoa(child.Process.Pid)), 0o600)
	time.Sleep(time.Hour)
}
