package spool

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
)

func TestEncryptionRoundTrip(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{0x42}, 32)
	o := testOptions()
	o.Key = key
	s := openT(t, dir, o)
	secret := []byte(`{"device_id":"pump-7","data":{"pressure":4.2}}`)
	for range 50 {
		if _, err := s.Append(context.Background(), "pump-7", secret); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	for _, path := range segFiles(t, dir) {
		data, _ := os.ReadFile(path)
		if bytes.Contains(data, []byte("pump-7")) || bytes.Contains(data, []byte("pressure")) {
			t.Fatalf("%s holds plaintext", path)
		}
	}
	s = openT(t, dir, o)
	recs := readAvailable(t, s)
	if len(recs) != 50 || recs[0].Key != "pump-7" || !bytes.Equal(recs[49].Data, secret) {
		t.Fatalf("read %d records; want 50 decrypted", len(recs))
	}
	s.Close()

	wrong := bytes.Repeat([]byte{0x43}, 32)
	for _, k := range [][]byte{wrong, nil} {
		o.Key = k
		if _, err := Open(dir, o); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("Open with key %x = %v; want ErrWrongKey", k, err)
		}
	}
}

func TestEncryptionTurnedOn(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	writeSpool(t, dir, o, 10)
	o.Key = bytes.Repeat([]byte{1}, 32)
	s := openT(t, dir, o)
	appendN(t, s, "k", 10)
	if recs := readAvailable(t, s); len(recs) != 20 {
		t.Fatalf("read %d; want 10 plain and 10 encrypted", len(recs))
	}
	s.Close()
	o.Key = nil
	if _, err := Open(dir, o); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Open without key after encrypted records = %v; want ErrWrongKey", err)
	}
}

func TestTamperedCiphertextRejected(t *testing.T) {
	dir := t.TempDir()
	o := testOptions()
	o.Key = bytes.Repeat([]byte{9}, 32)
	writeSpool(t, dir, o, 30)
	path := segFiles(t, dir)[0]
	offs, data := recordOffsets(t, path)
	v := offs[len(offs)/2]
	r, n, _ := decodeRecord(data[v:])
	// Change the ciphertext and fix the CRC, as an attacker would.
	data[v+recHeaderSize+nonceSize+1] ^= 1
	putRecordHeader(data[v:v+n], r.id, r.flags)
	// And swap the bodies of two records, fixing their CRCs: the ID is
	// authenticated, so neither opens.
	a, b := offs[len(offs)/2+2], offs[len(offs)/2+3]
	ra, na, _ := decodeRecord(data[a:])
	rb, nb, _ := decodeRecord(data[b:])
	if na != nb {
		t.Fatal("records of different sizes")
	}
	bodyA := bytes.Clone(ra.body)
	copy(data[a+recHeaderSize:a+na], rb.body)
	copy(data[b+recHeaderSize:b+nb], bodyA)
	putRecordHeader(data[a:a+na], ra.id, ra.flags)
	putRecordHeader(data[b:b+nb], rb.id, rb.flags)
	os.WriteFile(path, data, 0o600)

	s := openT(t, dir, o)
	recs := readAvailable(t, s)
	if len(recs) != 27 {
		t.Fatalf("read %d; want 27 (three tampered records skipped)", len(recs))
	}
	if st := s.Stats(); st.Damage.Corrupt != 3 {
		t.Fatalf("Damage = %+v; want 3 corrupt", st.Damage)
	}
	s.Rewind()
	if again := readAvailable(t, s); len(again) != 27 {
		t.Fatalf("after Rewind read %d; want 27", len(again))
	}
	if st := s.Stats(); st.Damage.Corrupt != 3 {
		t.Fatalf("after reading twice Damage = %+v; want still 3 corrupt", st.Damage)
	}
}
