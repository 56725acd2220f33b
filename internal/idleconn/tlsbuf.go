package idleconn

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"reflect"
	"unsafe"
)

// A *tls.Conn keeps, for the life of the connection, state that a server
// holding many idle connections does not need, and crypto/tls has no way
// to give it back:
//
//   - two input buffers, rawInput (records read from the socket) and hand
//     (handshake messages), each with the capacity of the largest thing it
//     ever held, for a server the client's first flight: 1–4 KiB per
//     connection, more with a post-quantum key share. A parked connection
//     drops them when they are empty; the next read allocates what it
//     needs.
//   - the client's parsed certificate chain, about 2.5 KiB for one P-256
//     certificate, with the handshake message its bytes point into. The
//     broker drops it once CONNECT is authenticated (DropPeerCertificates).
//
// The fields are found by name and type when the package loads. If a Go
// release renames or retypes one, the offsets are missing and nothing is
// dropped (TestTLSFieldsFound fails, so that this is noticed).
var (
	tlsBuffers   = tlsFields(reflect.TypeFor[bytes.Buffer](), "rawInput", "hand")
	tlsPeerCerts = tlsFields(reflect.TypeFor[[]*x509.Certificate](), "peerCertificates")
	tlsChains    = tlsFields(reflect.TypeFor[[][]*x509.Certificate](), "verifiedChains")
)

// tlsFields returns the offsets of tls.Conn's fields names, all of type
// typ, or nil if one is missing or of another type.
func tlsFields(typ reflect.Type, names ...string) []uintptr {
	t := reflect.TypeFor[tls.Conn]()
	var offs []uintptr
	for _, name := range names {
		f, ok := t.FieldByName(name)
		if !ok || f.Type != typ {
			return nil
		}
		offs = append(offs, f.Offset)
	}
	return offs
}

// field returns a pointer to c's field at off, as a *T.
func field[T any](c *tls.Conn, off uintptr) *T {
	return (*T)(unsafe.Add(unsafe.Pointer(c), off))
}

// releaseTLSBuffers drops c's empty input buffers. It must only be called
// by c's reader, between reads, after the handshake: nothing else touches
// these buffers then (writes and Close use other fields).
func releaseTLSBuffers(c *tls.Conn) {
	for _, off := range tlsBuffers {
		b := field[bytes.Buffer](c, off)
		if b.Len() == 0 && b.Cap() > 0 {
			*b = bytes.Buffer{}
		}
	}
}

// DropPeerCertificates forgets the client's certificate chain once the
// server has used it: ConnectionState reports no PeerCertificates or
// VerifiedChains afterwards. Call it from the connection's reader after
// the handshake, never alongside ConnectionState.
func (t *TLSConn) DropPeerCertificates() {
	for _, off := range tlsPeerCerts {
		*field[[]*x509.Certificate](t.Conn, off) = nil
	}
	for _, off := range tlsChains {
		*field[[][]*x509.Certificate](t.Conn, off) = nil
	}
}
