package idleconn

import (
	"bytes"
	"crypto/tls"
	"reflect"
	"unsafe"
)

// A *tls.Conn keeps two buffers for the life of the connection: rawInput,
// the records read from the socket, and hand, handshake messages. Each
// keeps the capacity of the largest thing it ever held, which for a server
// is the client's first flight: 1–4 KiB per connection (more with a
// post-quantum key share), about a third of what an idle TLS connection
// costs. crypto/tls has no way to give them back, so a parked connection
// drops them itself when they are empty; the next read after the park
// allocates what it needs.
//
// The fields are found by name and type when the package loads. If a Go
// release renames or retypes them, tlsBuffers is nil and nothing is
// released (TestTLSBuffersFound fails, so that this is noticed).
var tlsBuffers = findTLSBuffers()

func findTLSBuffers() []uintptr {
	t := reflect.TypeFor[tls.Conn]()
	bt := reflect.TypeFor[bytes.Buffer]()
	var offs []uintptr
	for _, name := range []string{"rawInput", "hand"} {
		f, ok := t.FieldByName(name)
		if !ok || f.Type != bt {
			return nil
		}
		offs = append(offs, f.Offset)
	}
	return offs
}

// releaseTLSBuffers drops c's empty input buffers. It must only be called
// by c's reader, between reads, after the handshake: nothing else touches
// these buffers then (writes and Close use other fields).
func releaseTLSBuffers(c *tls.Conn) {
	for _, off := range tlsBuffers {
		b := (*bytes.Buffer)(unsafe.Add(unsafe.Pointer(c), off))
		if b.Len() == 0 && b.Cap() > 0 {
			*b = bytes.Buffer{}
		}
	}
}
