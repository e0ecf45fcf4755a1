package devagent

import (
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"github.com/creack/pty"
)

// pollableMaster returns a copy of a pty master that Go's poller manages, so
// Close unblocks a pending Read. creack/pty leaves the master in blocking
// mode (its ioctls go through File.Fd), and a blocked Read on it would only
// return once every process holding the terminal had exited, which a
// background job may never do.
func pollableMaster(ptmx *os.File) (*os.File, error) {
	var dupFd int
	var dupErr error
	rc, err := ptmx.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("devagent: pty master: %w", err)
	}
	if err := rc.Control(func(fd uintptr) {
		dupFd, dupErr = syscall.Dup(int(fd))
	}); err != nil {
		return nil, fmt.Errorf("devagent: pty master: %w", err)
	}
	if dupErr != nil {
		return nil, fmt.Errorf("devagent: dup pty master: %w", dupErr)
	}
	syscall.CloseOnExec(dupFd)
	if err := syscall.SetNonblock(dupFd, true); err != nil {
		_ = syscall.Close(dupFd)
		return nil, fmt.Errorf("devagent: pty master nonblocking: %w", err)
	}
	// os.NewFile registers a non-blocking descriptor with the poller.
	return os.NewFile(uintptr(dupFd), ptmx.Name()), nil
}

// setWinsize resizes the terminal without File.Fd, which would put the
// master back into blocking mode.
func setWinsize(f *os.File, rows, cols uint16) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	ws := pty.Winsize{Rows: rows, Cols: cols}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, uintptr(syscall.TIOCSWINSZ), uintptr(unsafe.Pointer(&ws)))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}
