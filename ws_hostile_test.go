package qcache

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Bounds of the hostile WebSocket suite. ws_test.go already covers close
// frames and resets after a good link, garbage messages behind Route,
// oversize messages, a peer that never answers pings, refused handshakes and
// failing OnConnect; this file covers a peer that breaks the protocol itself.
const (
	hwsDialTimeout = 200 * time.Millisecond // WSDialTimeout: bounds one handshake
	hwsReadLimit   = 1 << 10
	hwsRecover     = 10 * time.Second // the stream gets through every hostile mode within this
	hwsClosePrompt = time.Second      // Close during a hanging handshake returns within this
)

// hostileWS is a raw TCP server on loopback that speaks just enough
// WebSocket to misbehave: its n-th connection runs modes[n-1], the last mode
// repeating.
type hostileWS struct {
	ln       net.Listener
	modes    []string
	n        atomic.Int64
	accepted chan string // the mode of each accepted connection
	written  atomic.Int64

	mu     sync.Mutex
	conns  []net.Conn
	closed bool
	wg     sync.WaitGroup
}

func newHostileWS(t *testing.T, modes ...string) *hostileWS {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := &hostileWS{ln: ln, modes: modes, accepted: make(chan string, 64)}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			if h.closed {
				h.mu.Unlock()
				conn.Close()
				return
			}
			h.conns = append(h.conns, conn)
			h.wg.Add(1)
			h.mu.Unlock()
			n := int(h.n.Add(1))
			mode := modes[min(n, len(modes))-1]
			select {
			case h.accepted <- mode:
			default:
			}
			go func() {
				defer h.wg.Done()
				defer conn.Close()
				h.serve(conn, mode)
			}()
		}
	}()
	t.Cleanup(h.Close)
	return h
}

func (h *hostileWS) url() string { return "ws://" + h.ln.Addr().String() + "/ws" }

func (h *hostileWS) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	conns := h.conns
	h.mu.Unlock()
	h.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	h.wg.Wait()
}

// handshake reads the upgrade request and answers it (with a wrong accept
// key when bad is set).
func hwsHandshake(conn net.Conn, br *bufio.Reader, bad bool) bool {
	req, err := http.ReadRequest(br)
	if err != nil {
		return false
	}
	sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	accept := base64.StdEncoding.EncodeToString(sum[:])
	if bad {
		accept = base64.StdEncoding.EncodeToString([]byte("not the right key!!!"))
	}
	_, err = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+accept+"\r\n\r\n")
	return err == nil
}

// hwsFrame is a final, unmasked server frame of at most 125 bytes.
func hwsFrame(op byte, payload string) []byte {
	return append([]byte{0x80 | op, byte(len(payload))}, payload...)
}

// hwsReadFrame reads one (masked) client frame.
func hwsReadFrame(br *bufio.Reader) (op byte, payload []byte, err error) {
	var h [2]byte
	if _, err = io.ReadFull(br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		_, err = io.ReadFull(br, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		_, err = io.ReadFull(br, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	if err != nil || n > 1<<16 {
		return 0, nil, errors.New("bad frame")
	}
	var mask [4]byte
	if h[1]&0x80 != 0 {
		if _, err = io.ReadFull(br, mask[:]); err != nil {
			return 0, nil, err
		}
	}
	payload = make([]byte, n)
	if _, err = io.ReadFull(br, payload); err != nil {
		return 0, nil, err
	}
	for i := range payload {
		payload[i] ^= mask[i%4]
	}
	return h[0] & 0x0f, payload, nil
}

func (h *hostileWS) serve(conn net.Conn, mode string) {
	br := bufio.NewReader(conn)
	switch mode {
	case "hang": // TCP accepted, the request never read nor answered
		io.Copy(io.Discard, conn)
		return
	case "hang after request": // the request read, never answered
		http.ReadRequest(br)
		io.Copy(io.Discard, br)
		return
	case "not HTTP":
		io.WriteString(conn, "SSH-2.0-OpenSSH_9.6\r\n\x00\xff\xfe garbage\r\n\r\n")
		return
	case "bad accept key":
		// Then the connection closes: held open, coder/websocket would
		// read it for up to 3s after refusing the key, whatever the
		// dial's context says.
		hwsHandshake(conn, br, true)
		return
	}
	if !hwsHandshake(conn, br, false) {
		return
	}
	switch mode {
	case "garbage frames": // reserved opcode, RSV bits set, then noise
		conn.Write([]byte{0xff, 0x7e, 0x00, 0x10, 0xde, 0xad, 0xbe, 0xef})
		io.Copy(io.Discard, br)
	case "masked server frame": // servers must not mask; then the link drops
		conn.Write([]byte{0x81, 0x82, 1, 2, 3, 4, 'h' ^ 1, 'i' ^ 2})
	case "oversize control frame": // control frames carry at most 125 bytes
		conn.Write(append([]byte{0x89, 126, 0, 200}, make([]byte, 200)...))
		io.Copy(io.Discard, br)
	case "truncated frame": // a 100-byte frame cut after 10 bytes
		conn.Write(append([]byte{0x81, 100}, "0123456789"...))
	case "endless frame": // a frame of 2^62 bytes that keeps coming
		hdr := []byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint64(hdr[2:], 1<<62)
		conn.Write(hdr)
		chunk := make([]byte, 16<<10)
		for {
			n, err := conn.Write(chunk)
			h.written.Add(int64(n))
			if err != nil {
				return
			}
		}
	case "endless fragments": // a message in small fragments without end
		conn.Write([]byte{0x01, 4, 'a', 'b', 'c', 'd'})
		for {
			n, err := conn.Write([]byte{0x00, 4, 'e', 'f', 'g', 'h'})
			h.written.Add(int64(n))
			if err != nil {
				return
			}
		}
	case "good":
		conn.Write(hwsFrame(1, `{"id":"1","name":"ok"}`))
		for {
			op, p, err := hwsReadFrame(br)
			if err != nil {
				return
			}
			switch op {
			case 0x9:
				conn.Write(hwsFrame(0xa, string(p)))
			case 0x8:
				conn.Write(hwsFrame(0x8, string(p)))
				return
			}
		}
	}
}

// TestWSHostilePeer runs a stream against a peer that goes through every
// protocol-level misbehaviour, one per connection, and then behaves: the
// stream reports and counts each one, reconnects, and delivers the good
// peer's message.
func TestWSHostilePeer(t *testing.T) {
	hostile := []string{"hang", "hang after request", "not HTTP", "bad accept key", "garbage frames",
		"masked server frame", "oversize control frame", "truncated frame", "endless frame", "endless fragments"}
	handshakes := 7 // modes past the handshake, "good" included
	srv := newHostileWS(t, append(hostile, "good")...)
	c := NewClient()
	defer c.Close()
	q := NewQueryFunc(c, Key{"users"}, func(context.Context, string) (wsUser, error) {
		return wsUser{}, errors.New("no fetching here")
	}, StaleTime(Forever))
	var log wsErrorLog
	start := time.Now()
	s := c.SubscribeWS(context.Background(), srv.url(), wsUserHandler(q),
		WSReconnect(5*time.Millisecond, 20*time.Millisecond), WSReadLimit(hwsReadLimit), WSOnError(log.add),
		WSDialTimeout(hwsDialTimeout))
	defer s.Close()

	wsWaitFor(t, hwsRecover, "the good peer's message", func() bool { u, _ := q.Peek("1"); return u.Name == "ok" })
	took := time.Since(start)
	st := s.Stats()
	errs := log.all()
	// coder/websocket accepts the masked frame (RFC 6455 wants the link
	// failed): the handler refuses "hi", then the drop is reported.
	wantErrs := len(hostile) + 1
	assert.Equal(t, uint64(wantErrs), st.Errors, "Stats = %+v; errors reported: %v", st, errs)
	assert.Len(t, errs, wantErrs, "errors reported")
	assert.Equal(t, uint64(handshakes), st.Connects, "Stats = %+v", st)
	assert.EqualValues(t, 2, st.Messages, "Stats = %+v: \"hi\" and the good one", st)
	assert.True(t, s.Connected(), "not connected to the good peer")
	for _, e := range errs {
		assert.ErrorContains(t, e, "qcache: websocket ws://127.0.0.1:", "error without the stream's URL")
	}
	for i := range min(len(errs), 2) {
		assert.ErrorIs(t, errs[i], context.DeadlineExceeded, "%s: not cut by the dial timeout", hostile[i])
	}
	assert.True(t, log.has(websocket.ErrMessageTooBig), "endless frames not refused at the read limit: %v", errs)
	for _, e := range errs {
		t.Logf("  %v", e)
	}
	t.Logf("hostile peer: %d modes survived in %v; server streamed %d bytes into frames that were refused at %d",
		len(hostile), took.Round(time.Millisecond), srv.written.Load(), hwsReadLimit)
}

// TestWSCloseDuringAHangingHandshake: with no dial timeout of its own, a
// stream whose server accepts TCP and never answers is still ended at once
// by Close, by its context and by Client.Close.
func TestWSCloseDuringAHangingHandshake(t *testing.T) {
	srv := newHostileWS(t, "hang")
	noop := func(context.Context, []byte) error { return nil }
	for _, how := range []string{"Close", "context", "Client.Close"} {
		t.Run(how, func(t *testing.T) {
			c := NewClient()
			defer c.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := c.SubscribeWS(ctx, srv.url(), noop)
			select {
			case <-srv.accepted:
			case <-time.After(5 * time.Second):
				require.FailNow(t, "no connection")
			}
			time.Sleep(20 * time.Millisecond) // the request is on the wire
			start := time.Now()
			switch how {
			case "Close":
				s.Close()
			case "context":
				cancel()
			case "Client.Close":
				c.Close()
			}
			select {
			case <-s.Done():
			case <-time.After(hwsClosePrompt):
				require.FailNowf(t, "the stream still runs", "the stream still runs %v after %s", hwsClosePrompt, how)
			}
			d := time.Since(start)
			assert.LessOrEqual(t, d, hwsClosePrompt/2, "%s took %v", how, d)
			st := s.Stats()
			assert.Zero(t, st.Connects, "Stats = %+v", st)
			assert.Zero(t, st.Errors, "Stats = %+v; the stream's own end is not an error", st)
		})
	}
}
