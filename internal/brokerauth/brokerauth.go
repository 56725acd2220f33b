// Package brokerauth authenticates devices and confines them to their own
// topics (DESIGN §3) on an EXTERNAL MQTT broker, for hub instances that
// run behind one instead of the embedded broker:
//
//   - Mosquitto: a syncer (Mosquitto) writes Mosquitto's password_file and
//     acl_file from the registry and makes Mosquitto reload them (SIGHUP).
//     Mosquitto cannot verify the registry's argon2id hashes, so a
//     Mosquitto-format hash ($7$, PBKDF2-SHA512) is kept in the store's KV
//     for each password device, made when its password is known: by the
//     registry's Options.OnPassword hook (Mosquitto.OnPassword).
//   - EMQX (and any broker that can call HTTP the same way): an
//     http.Handler (Handler) in the shape of EMQX 5's HTTP authentication
//     and authorization backends, answering from the registry with the
//     embedded broker's own password verification and ACL (internal/acl).
//
// The hub instances themselves connect to the broker as privileged users
// (HubUser). See docs/brokers.md for how to wire each broker, and what is
// and is not covered.
package brokerauth

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// HubUser is an MQTT user of the hub instances themselves (e.g.
// "fieldhub-hub"): it may publish and subscribe to everything under
// devices/ (shared subscriptions included). Its password comes from the
// configuration (a file or an environment variable), never from the
// registry.
type HubUser struct {
	Name     string
	Password string
}

// LogValue implements slog.LogValuer: the name, never the password.
func (u HubUser) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", u.Name), slog.String("password", "REDACTED"))
}

// String returns a redacted description.
func (u HubUser) String() string {
	return fmt.Sprintf("brokerauth.HubUser{Name: %q, Password: REDACTED}", u.Name)
}

// Format implements fmt.Formatter so that no verb prints the password.
func (u HubUser) Format(f fmt.State, _ rune) { fmt.Fprint(f, u.String()) }

// ErrInvalidConfig is wrapped by the constructors' configuration errors.
var ErrInvalidConfig = errors.New("brokerauth: invalid configuration")

// validUserName accepts a hub user name that every supported broker file
// format can carry: 1–128 printable ASCII characters without spaces, ':'
// (Mosquitto's password file separator), '#', '+' or '/'.
func validUserName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(":#+/", c) >= 0 {
			return false
		}
	}
	return true
}

func checkHubUsers(users []HubUser) error {
	seen := make(map[string]bool, len(users))
	for i, u := range users {
		switch {
		case !validUserName(u.Name):
			return fmt.Errorf("%w: hub user %d: name %q must be 1–128 printable characters without spaces, ':', '#', '+' or '/'", ErrInvalidConfig, i, u.Name)
		case u.Password == "":
			return fmt.Errorf("%w: hub user %q: empty password", ErrInvalidConfig, u.Name)
		case strings.ContainsAny(u.Password, "\x00\n\r"):
			return fmt.Errorf("%w: hub user %q: password with a NUL or line break", ErrInvalidConfig, u.Name)
		case seen[u.Name]:
			return fmt.Errorf("%w: hub user %q listed twice", ErrInvalidConfig, u.Name)
		}
		seen[u.Name] = true
	}
	return nil
}
