package brokerauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fieldhub/fieldhub/internal/acl"
	"github.com/fieldhub/fieldhub/internal/promutil"
	"github.com/fieldhub/fieldhub/internal/store"
	"github.com/fieldhub/fieldhub/topic"
)

// Routes of Handler, relative to where it is mounted (e.g. with
// http.StripPrefix).
const (
	AuthPath = "/mqtt/auth" // EMQX HTTP authentication
	ACLPath  = "/mqtt/acl"  // EMQX HTTP authorization
)

// Limits of Handler.
const (
	maxBodyBytes       = 16 << 10
	defaultAuthTimeout = 10 * time.Second
)

// Registry is what Handler needs of the registry service
// (*registry.Service implements it): the embedded broker's own password
// and certificate verification (with its cache and bounded hashing), a
// device lookup for certificate logins, and the gateway relations.
type Registry interface {
	Authenticate(ctx context.Context, clientID, username string, password []byte, peerCerts []*x509.Certificate) (string, error)
	Get(ctx context.Context, id string) (store.Device, error)
	acl.Gateways
}

// HandlerConfig configures a Handler. Secret is required.
type HandlerConfig struct {
	// Secret is the shared secret the broker sends as
	// "Authorization: Bearer <Secret>" (EMQX: the backend's headers).
	// At least 16 characters.
	Secret string
	// HubUsers log in with their configured password and get
	// is_superuser (EMQX then skips authorization for them); their
	// authorization requests are allowed on devices/# and $share/…/devices/….
	HubUsers []HubUser
	// CertificateLogins accepts a login without a password whose
	// cert_common_name names a certificate device of the registry (the
	// broker verified the certificate against the hub's CA). Enable it
	// only when every listener of the broker requires client certificates
	// signed by the hub's CA, or cert_common_name could be empty or forged
	// — it is never trusted when the broker sends a password.
	CertificateLogins bool
	// AuthTimeout bounds one authentication (queueing for the bounded
	// argon2id verification included); default 10 s.
	AuthTimeout time.Duration
	// Logger receives the handler's logs; nil discards.
	Logger *slog.Logger
	// Registerer receives the handler's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Handler is the HTTP authentication and authorization backend of an
// external broker, in the shape of EMQX 5's HTTP authenticator and HTTP
// authorizer:
//
//	POST AuthPath {"clientid", "username", "password"[, "cert_common_name"]}
//	POST ACLPath  {"clientid", "username", "topic", "action": "publish"|"subscribe"}
//
// both answered 200 {"result": "allow"|"deny", "is_superuser": bool}.
// A device logs in with username = client id = its id; its requests are
// decided by the embedded broker's ACL (internal/acl) with the gateway
// rules. A request without the shared secret is answered 401 (missing) or
// 403 (wrong), a malformed one 400 with {"error": reason}; a registry
// failure 503 (EMQX then treats the request as "ignore" and goes on down
// its chain: end the chain with deny).
type Handler struct {
	reg       Registry
	secret    [sha256.Size]byte
	hubs      map[string][sha256.Size]byte
	certs     bool
	timeout   time.Duration
	log       *slog.Logger
	requests  *prometheus.CounterVec
	authnTime prometheus.Histogram
}

// NewHandler returns the endpoint over reg.
func NewHandler(reg Registry, cfg HandlerConfig) (*Handler, error) {
	if reg == nil {
		return nil, fmt.Errorf("%w: http: a registry is required", ErrInvalidConfig)
	}
	if len(cfg.Secret) < 16 {
		return nil, fmt.Errorf("%w: http: the shared secret must have at least 16 characters", ErrInvalidConfig)
	}
	if err := checkHubUsers(cfg.HubUsers); err != nil {
		return nil, err
	}
	h := &Handler{
		reg:     reg,
		secret:  sha256.Sum256([]byte(cfg.Secret)),
		hubs:    make(map[string][sha256.Size]byte, len(cfg.HubUsers)),
		certs:   cfg.CertificateLogins,
		timeout: cfg.AuthTimeout,
		log:     cfg.Logger,
		requests: promutil.RegisterOrExisting(cfg.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fieldhub_brokerauth_requests_total",
			Help: "Requests of the external broker's HTTP authentication (auth) and authorization (acl) by result: allow, deny, bad_request, unauthorized, unavailable.",
		}, []string{"endpoint", "result"})),
		authnTime: promutil.RegisterOrExisting(cfg.Registerer, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "fieldhub_brokerauth_authn_seconds",
			Help:    "Time to answer one HTTP authentication request.",
			Buckets: []float64{.001, .005, .01, .02, .04, .08, .16, .32, .64, 1.28, 2.56, 5.12},
		})),
	}
	for _, u := range cfg.HubUsers {
		h.hubs[u.Name] = sha256.Sum256([]byte(u.Password))
	}
	if h.timeout <= 0 {
		h.timeout = defaultAuthTimeout
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.log = h.log.With("component", "brokerauth-http")
	return h, nil
}

// authnRequest is EMQX's authentication body (with the placeholders
// ${clientid}, ${username}, ${password}, ${cert_common_name}).
type authnRequest struct {
	ClientID       *string `json:"clientid"`
	Username       *string `json:"username"`
	Password       *string `json:"password"`
	CertCommonName string  `json:"cert_common_name"`
}

// authzRequest is EMQX's authorization body (${clientid}, ${username},
// ${topic}, ${action}).
type authzRequest struct {
	ClientID *string `json:"clientid"`
	Username *string `json:"username"`
	Topic    *string `json:"topic"`
	Action   *string `json:"action"`
}

type result struct {
	Result      string `json:"result"`
	IsSuperuser bool   `json:"is_superuser"`
}

// ServeHTTP routes AuthPath and ACLPath (POST only).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var endpoint string
	switch r.URL.Path {
	case AuthPath:
		endpoint = "auth"
	case ACLPath:
		endpoint = "acl"
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.fail(w, endpoint, http.StatusMethodNotAllowed, "bad_request", "method not allowed: use POST")
		return
	}
	if status, reason := h.checkSecret(r); status != 0 {
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fieldhub-broker"`)
		}
		h.fail(w, endpoint, status, "unauthorized", reason)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			h.fail(w, endpoint, http.StatusUnsupportedMediaType, "bad_request", "content type must be application/json")
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		h.fail(w, endpoint, http.StatusBadRequest, "bad_request", "body unreadable or larger than 16 KiB")
		return
	}
	if endpoint == "auth" {
		h.authn(w, r.Context(), body)
	} else {
		h.authz(w, r.Context(), body)
	}
}

func (h *Handler) checkSecret(r *http.Request) (int, string) {
	a := r.Header.Get("Authorization")
	if a == "" {
		return http.StatusUnauthorized, "missing bearer token"
	}
	scheme, tok, ok := strings.Cut(a, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return http.StatusUnauthorized, "malformed authorization header: want Bearer <secret>"
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	if subtle.ConstantTimeCompare(got[:], h.secret[:]) != 1 {
		return http.StatusForbidden, "wrong bearer token"
	}
	return 0, ""
}

// decode reads a JSON object strictly (unknown fields are fine: EMQX
// templates may send more than we use).
func decode(body []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed JSON body: %v", err)
	}
	if dec.More() {
		return errors.New("malformed JSON body: data after the object")
	}
	return nil
}

func (h *Handler) authn(w http.ResponseWriter, ctx context.Context, body []byte) {
	start := time.Now()
	defer func() { h.authnTime.Observe(time.Since(start).Seconds()) }()
	var req authnRequest
	if err := decode(body, &req); err != nil {
		h.fail(w, "auth", http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if req.ClientID == nil || req.Username == nil {
		h.fail(w, "auth", http.StatusBadRequest, "bad_request", `"clientid" and "username" are required`)
		return
	}
	clientID, username := *req.ClientID, *req.Username
	password := ""
	if req.Password != nil {
		password = *req.Password
	}
	if want, ok := h.hubs[username]; ok && username != "" {
		got := sha256.Sum256([]byte(password))
		if password != "" && subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			h.answer(w, "auth", result{Result: "allow", IsSuperuser: true})
			return
		}
		h.deny(w, "auth", "hub user: wrong password", username)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	if password == "" {
		h.certLogin(w, ctx, clientID, username, req.CertCommonName)
		return
	}
	id, err := h.reg.Authenticate(ctx, clientID, username, []byte(password), nil)
	switch {
	case err == nil && id == clientID && id == username:
		h.answer(w, "auth", result{Result: "allow"})
	case err == nil:
		h.deny(w, "auth", "client id and username must both be the device id", clientID)
	case isRefusal(err):
		h.deny(w, "auth", err.Error(), clientID)
	default:
		h.unavailable(w, "auth", err)
	}
}

// certLogin accepts a password-less login of a certificate device whose
// certificate the broker verified (CertificateLogins).
func (h *Handler) certLogin(w http.ResponseWriter, ctx context.Context, clientID, username, cn string) {
	if !h.certs || cn == "" {
		h.deny(w, "auth", "no password", clientID)
		return
	}
	if cn != clientID || (username != "" && username != clientID) || !topic.ValidDeviceID(cn) {
		h.deny(w, "auth", "certificate common name must equal the client id (and the username, if any)", clientID)
		return
	}
	d, err := h.reg.Get(ctx, cn)
	switch {
	case errors.Is(err, store.ErrNotFound):
		h.deny(w, "auth", "unknown device", clientID)
	case err != nil:
		h.unavailable(w, "auth", err)
	case d.Auth != store.AuthCertificate:
		h.deny(w, "auth", "not a certificate device", clientID)
	default:
		h.answer(w, "auth", result{Result: "allow"})
	}
}

func (h *Handler) authz(w http.ResponseWriter, ctx context.Context, body []byte) {
	var req authzRequest
	if err := decode(body, &req); err != nil {
		h.fail(w, "acl", http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if req.ClientID == nil || req.Username == nil || req.Topic == nil || req.Action == nil {
		h.fail(w, "acl", http.StatusBadRequest, "bad_request", `"clientid", "username", "topic" and "action" are required`)
		return
	}
	clientID, username, name, action := *req.ClientID, *req.Username, *req.Topic, *req.Action
	var write bool
	switch action {
	case "publish":
		write = true
	case "subscribe":
	default:
		h.fail(w, "acl", http.StatusBadRequest, "bad_request", `"action" must be "publish" or "subscribe"`)
		return
	}
	if _, ok := h.hubs[username]; ok && username != "" {
		// Normally never asked (is_superuser), but decided anyway.
		f := name
		if rest, ok := strings.CutPrefix(f, "$share/"); ok && !write {
			_, f, _ = strings.Cut(rest, "/")
		}
		if f == topic.Prefix+"/#" || strings.HasPrefix(f, topic.Prefix+"/") {
			h.answer(w, "acl", result{Result: "allow"})
			return
		}
		h.deny(w, "acl", "hub user outside devices/", username)
		return
	}
	if clientID == "" || clientID != username || !topic.ValidDeviceID(clientID) {
		h.deny(w, "acl", "client id and username must both be the device id", clientID)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	rules := acl.Rules{Gateways: h.reg, Batch: true}
	var reason string
	if write {
		reason = rules.PublishDenial(ctx, clientID, name)
	} else {
		if err := topic.ValidateFilter(name); err != nil {
			reason = acl.BoundsDenial(err)
		} else {
			reason = rules.ReadDenial(ctx, clientID, name)
		}
	}
	if reason != "" {
		h.deny(w, "acl", action+" "+reason, clientID)
		return
	}
	h.answer(w, "acl", result{Result: "allow"})
}

// isRefusal reports whether err is the registry refusing the credentials
// (rather than failing to decide).
func isRefusal(err error) bool {
	var rr interface{ RefusalReason() string }
	return errors.As(err, &rr)
}

func (h *Handler) answer(w http.ResponseWriter, endpoint string, r result) {
	h.requests.WithLabelValues(endpoint, r.Result).Inc()
	writeJSON(w, http.StatusOK, r)
}

func (h *Handler) deny(w http.ResponseWriter, endpoint, why, client string) {
	h.log.Debug("denied", "endpoint", endpoint, "client", client, "reason", why)
	h.answer(w, endpoint, result{Result: "deny"})
}

func (h *Handler) unavailable(w http.ResponseWriter, endpoint string, err error) {
	h.log.Warn("cannot decide", "endpoint", endpoint, "err", err)
	h.requests.WithLabelValues(endpoint, "unavailable").Inc()
	writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "registry unavailable"})
}

func (h *Handler) fail(w http.ResponseWriter, endpoint string, status int, label, reason string) {
	h.requests.WithLabelValues(endpoint, label).Inc()
	writeJSON(w, status, map[string]string{"error": reason})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
