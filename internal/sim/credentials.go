package sim

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/fieldhub/fieldhub/topic"
)

// Credential is how one simulated device authenticates: a password, or a
// client certificate (TLS only).
type Credential struct {
	ID          string
	Password    string
	Certificate tls.Certificate
}

// ReadCredentials reads a credentials file: one "id,password" per line;
// blank lines and lines starting with "#" are skipped; the password is the
// rest of the line after the first comma, kept verbatim.
func ReadCredentials(path string) ([]Credential, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	defer f.Close()
	creds, err := ParseCredentials(f)
	if err != nil {
		return nil, fmt.Errorf("credentials %s: %w", path, err)
	}
	return creds, nil
}

// ParseCredentials reads "id,password" lines (see ReadCredentials).
func ParseCredentials(r io.Reader) ([]Credential, error) {
	var creds []Credential
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		id, pw, ok := strings.Cut(line, ",")
		id = strings.TrimSpace(id)
		if !ok || pw == "" {
			return nil, fmt.Errorf("line %d: want id,password", n)
		}
		if !topic.ValidDeviceID(id) {
			return nil, fmt.Errorf("line %d: %q is not a device id", n, id)
		}
		if seen[id] {
			return nil, fmt.Errorf("line %d: device %s listed twice", n, id)
		}
		seen[id] = true
		creds = append(creds, Credential{ID: id, Password: pw})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(creds) == 0 {
		return nil, fmt.Errorf("no credentials")
	}
	return creds, nil
}

// WriteCredentials writes the password credentials as "id,password" lines
// to path, mode 0600, replacing it.
func WriteCredentials(path string, creds []Credential) error {
	var b strings.Builder
	b.WriteString("# fieldhub sim credentials: id,password\n")
	for _, c := range creds {
		if c.Password == "" {
			continue
		}
		fmt.Fprintf(&b, "%s,%s\n", c.ID, c.Password)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("writing credentials: %w", err)
	}
	return nil
}
