package registry

import (
	"context"
	"errors"
	"testing"

	"github.com/fieldhub/fieldhub/internal/store"
)

func TestOnPasswordHook(t *testing.T) {
	type call struct {
		id       string
		version  int
		password string
		hash     string
	}
	var calls []call
	fail := false
	f := newFixture(t, Options{OnPassword: func(_ context.Context, d store.Device, pw string) error {
		calls = append(calls, call{d.ID, d.CredentialsVersion, pw, d.PasswordHash})
		if fail {
			return errors.New("kv down")
		}
		return nil
	}})
	var created []string
	f.svc.OnCreate(func(id string) { created = append(created, id) })
	ctx := context.Background()

	_, c := f.create(t, CreateRequest{ID: "p1"})
	f.create(t, CreateRequest{ID: "c1", Auth: store.AuthCertificate})
	if len(calls) != 1 || calls[0] != (call{"p1", 1, c.Password, ""}) {
		t.Fatalf("after Create: hook calls = %+v; want one for p1 v1 with its password and no hash", calls)
	}
	if len(created) != 2 {
		t.Errorf("OnCreate calls = %v; want [p1 c1]", created)
	}

	c2, err := f.svc.Rotate(ctx, "p1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) != 2 || calls[1] != (call{"p1", 2, c2.Password, ""}) {
		t.Fatalf("after Rotate: hook calls = %+v; want p1 v2 with the new password", calls)
	}
	if _, err := f.svc.Rotate(ctx, "c1", nil); err != nil || len(calls) != 2 {
		t.Fatalf("Rotate(certificate device) = %v, hook calls %d; want nil, no new call", err, len(calls))
	}

	// A failing hook aborts: nothing created, the old password still works.
	fail = true
	if _, _, err := f.svc.Create(ctx, CreateRequest{ID: "p2"}); err == nil {
		t.Fatal("Create with a failing hook = nil error")
	}
	if _, err := f.svc.Get(ctx, "p2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(p2) after an aborted Create = %v; want ErrNotFound", err)
	}
	if _, err := f.svc.Rotate(ctx, "p1", nil); err == nil {
		t.Fatal("Rotate with a failing hook = nil error")
	}
	if _, err := f.svc.Authenticate(ctx, "p1", "p1", []byte(c2.Password), nil); err != nil {
		t.Errorf("Authenticate(p1, password before the aborted rotation) = %v; want ok", err)
	}
	if d, _ := f.svc.Get(ctx, "p1"); d.CredentialsVersion != 2 {
		t.Errorf("CredentialsVersion after an aborted rotation = %d; want 2", d.CredentialsVersion)
	}
}
