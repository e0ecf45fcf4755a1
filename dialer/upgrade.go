package dialer

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
)

// idleCopyBuffer is what each direction of an upgraded connection holds
// while it waits for bytes. A proxied websocket spends most of its life
// idle, blocked in a read: io.Copy would hold 32 KiB per direction for
// the whole session; typical frames (keystrokes, terminal lines, pings)
// fit in this.
const idleCopyBuffer = 1 << 10

// errInvalidWrite: a Write returned an impossible count (as io.Copy's).
var errInvalidWrite = errors.New("invalid write result")

// copyAdaptive copies src to dst until EOF (then returns a nil error) or
// an error, like io.Copy, without consulting io.WriterTo or io.ReaderFrom.
// It reads into a small buffer; when a read fills it, more is likely
// queued, so it borrows a pooled 32 KiB buffer for the following reads
// and gives it back after the first read that does not fill that one. An
// idle stream therefore blocks holding only the small buffer, and a bulk
// transfer still moves 32 KiB per read.
func copyAdaptive(dst io.Writer, src io.Reader) (written int64, err error) {
	small := make([]byte, idleCopyBuffer)
	var big []byte
	defer func() {
		if big != nil {
			proxyBuffers.Put(big)
		}
	}()
	for {
		buf := small
		if big != nil {
			buf = big
		}
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			if nw < 0 || nr < nw {
				nw = 0
				if werr == nil {
					werr = errInvalidWrite
				}
			}
			written += int64(nw)
			if werr != nil {
				return written, werr
			}
			if nr != nw {
				return written, io.ErrShortWrite
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return written, nil
			}
			return written, rerr
		}
		switch {
		case big == nil && nr == len(small):
			big = proxyBuffers.Get()
		case big != nil && nr < len(big):
			proxyBuffers.Put(big)
			big = nil
		}
	}
}

// upgradeWriter hands the reverse proxy an upgradedConn when it hijacks
// the client connection for a protocol switch (a websocket). It must be
// the outermost writer: http.ResponseController uses the first Hijack it
// finds.
type upgradeWriter struct {
	http.ResponseWriter
}

func (w upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return c, brw, err
	}
	uc := &upgradedConn{Conn: c}
	if brw.Reader.Buffered() > 0 {
		uc.buffered = brw.Reader
	}
	return uc, brw, nil
}

// Unwrap lets http.ResponseController reach Flush (an app that answers an
// upgrade request without switching may stream).
func (w upgradeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// upgradedConn is the hijacked client connection of a protocol switch.
// httputil.ReverseProxy copies both directions with io.Copy, which
// finds WriteTo and ReadFrom here and so copies with copyAdaptive
// instead of a 32 KiB buffer per direction. Reads first return the bytes
// the server had already buffered (a client that sent before the 101),
// which the proxy would otherwise never forward. httputil reads from one
// goroutine only, which is what Read assumes.
type upgradedConn struct {
	net.Conn
	// buffered holds bytes read from the client before the hijack; nil
	// once drained.
	buffered *bufio.Reader
}

func (c *upgradedConn) Read(p []byte) (int, error) {
	if c.buffered == nil {
		return c.Conn.Read(p)
	}
	n, err := c.buffered.Read(p)
	if c.buffered.Buffered() == 0 {
		c.buffered = nil
	}
	return n, err
}

// WriteTo copies client bytes to w (towards the app).
func (c *upgradedConn) WriteTo(w io.Writer) (int64, error) {
	return copyAdaptive(w, c)
}

// ReadFrom copies r (the app's bytes) to the client.
func (c *upgradedConn) ReadFrom(r io.Reader) (int64, error) {
	return copyAdaptive(c.Conn, r)
}

// CloseWrite half-closes the client connection once the app has finished
// sending, as the proxy does for a *net.TCPConn. A connection that
// cannot half-close reports an error, which makes the proxy end the
// session, as it does for such a connection.
func (c *upgradedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
