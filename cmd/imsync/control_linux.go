package main

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// checkPeer refuses a peer whose user id is not the server's: the socket's
// mode already keeps other users out; this closes the window between its
// creation and its chmod.
func checkPeer(conn net.Conn) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("control: not a unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if credErr != nil {
		return fmt.Errorf("control: peer credentials: %w", credErr)
	}
	if int(cred.Uid) != os.Getuid() {
		return fmt.Errorf("control: user %d may not use the control socket of a server running as user %d", cred.Uid, os.Getuid())
	}
	return nil
}
