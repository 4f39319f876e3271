package teststore

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/imsync/imsync/events/esdb/testserver"
)

// serverChildEnv tells a test binary started by StartServerProcess to be
// the protocol server: DIR|LISTEN.
const serverChildEnv = "IMSYNC_ESDB_SERVER_CHILD"

// ServeAsChild is the body of the test (named by the caller of
// StartServerProcess) that a child test binary runs to be the protocol
// server on the data and address it was given, until killed. In a normal
// test run it skips.
func ServeAsChild(t *testing.T) {
	dir, listen, ok := strings.Cut(os.Getenv(serverChildEnv), "|")
	if !ok {
		t.Skip("only runs as a protocol server process started by a test")
	}
	srv, err := testserver.Start(context.Background(), testserver.Options{Dir: dir, Listen: listen})
	if err != nil {
		fmt.Println("start:", err)
		os.Exit(2)
	}
	fmt.Println("serving", srv.URL())
	select {} // until killed
}

// StartServerProcess runs the protocol server in a child process — this
// test binary running only the test childTest, which calls ServeAsChild —
// on dir and listen, and returns it once it serves, with its connection
// string. The process is killed when the test ends; a test may kill it
// sooner (SIGKILL) and start another on the same dir and address.
func StartServerProcess(t *testing.T, childTest, dir, listen string) (*exec.Cmd, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^"+childTest+"$")
	cmd.Env = append(os.Environ(), serverChildEnv+"="+dir+"|"+listen)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if m := regexp.MustCompile(`serving (\S+)`).FindStringSubmatch(sc.Text()); m != nil {
			go func() {
				for sc.Scan() {
				}
			}()
			return cmd, m[1]
		}
	}
	t.Fatal("the server process ended before serving")
	return nil, ""
}
