package api

import (
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/fieldhub/fieldhub/internal/registry"
	"github.com/fieldhub/fieldhub/internal/store"
)

// Device is the API's view of a registry entry.
type Device struct {
	ID        string            `json:"id"`
	Name      string            `json:"name,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Gateway   string            `json:"gateway,omitempty"`
	Auth      store.AuthKind    `json:"auth"`
	CreatedAt time.Time         `json:"created_at"`
	Online    bool              `json:"online"`
	LastSeen  *time.Time        `json:"last_seen,omitempty"`
	// Status is the last payload the device (or its will) published on
	// devices/{id}/status since the hub started, e.g. "offline".
	Status             string     `json:"status,omitempty"`
	CredentialsVersion int        `json:"credentials_version"`
	CertSerial         string     `json:"cert_serial,omitempty"`
	CertNotAfter       *time.Time `json:"cert_not_after,omitempty"`
	// MsgRate is the messages stored for the device in the last minute
	// (readings a gateway forwards count for their own device).
	MsgRate float64 `json:"msg_rate"`
	// Firmware is the version the device reports in its twin (reported
	// "firmware", or "firmware.version"), when it reports one.
	Firmware string `json:"firmware,omitempty"`
}

// Credentials are returned once, at creation and rotation.
type Credentials struct {
	Password    string `json:"password,omitempty"`
	Certificate string `json:"certificate,omitempty"`
	PrivateKey  string `json:"private_key,omitempty"`
	CA          string `json:"ca,omitempty"`
}

type createRequest struct {
	ID      string            `json:"id"`
	Name    string            `json:"name"`
	Labels  map[string]string `json:"labels"`
	Gateway string            `json:"gateway"`
	Auth    store.AuthKind    `json:"auth"`
	CSR     string            `json:"csr"`
}

type deviceWithCredentials struct {
	Device
	Credentials Credentials `json:"credentials"`
}

func (a *API) view(d store.Device) Device {
	v := Device{
		ID: d.ID, Name: d.Name, Labels: d.Labels, Gateway: d.Gateway, Auth: d.Auth,
		CreatedAt: d.CreatedAt.UTC(), CredentialsVersion: d.CredentialsVersion, CertSerial: d.CertSerial,
	}
	seen := d.LastSeen
	if a.o.Presence != nil {
		v.Online = a.o.Presence.Online(d.ID)
		if st, ok := a.o.Presence.(interface{ Status(id string) string }); ok {
			v.Status = st.Status(d.ID)
		}
		if t := a.o.Presence.LastSeen(d.ID); t.After(seen) {
			seen = t
		}
	}
	if !seen.IsZero() {
		s := seen.UTC()
		v.LastSeen = &s
	}
	if !d.CertNotAfter.IsZero() {
		n := d.CertNotAfter.UTC()
		v.CertNotAfter = &n
	}
	if a.o.Rates != nil {
		v.MsgRate = math.Round(a.o.Rates.MessageRate(d.ID)*10) / 10
	}
	return v
}

func credentials(c registry.Credentials) Credentials {
	return Credentials{Password: c.Password, Certificate: c.CertificatePEM, PrivateKey: c.PrivateKeyPEM, CA: c.CAPEM}
}

func (a *API) createDevice(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if err := decodeBody(r, &req); err != nil {
		a.storeError(w, err)
		return
	}
	d, c, err := a.o.Registry.Create(r.Context(), registry.CreateRequest{
		ID: req.ID, Name: req.Name, Labels: req.Labels, Gateway: req.Gateway, Auth: req.Auth, CSR: []byte(req.CSR),
	})
	if err != nil {
		a.storeError(w, err)
		return
	}
	a.o.Logger.Info("device created", "device", d.ID, "auth", d.Auth)
	w.Header().Set("Location", "/api/v1/devices/"+d.ID)
	writeJSON(w, http.StatusCreated, deviceWithCredentials{Device: a.view(d), Credentials: credentials(c)})
}

// MaxListLimit is the largest page of devices.
const MaxListLimit = 1000

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 100
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			a.storeError(w, badRequest("limit: want 1..%d, got %q", MaxListLimit, s))
			return
		}
		limit = n
	}
	// Ask for one more to know whether a next page exists.
	ds, err := a.o.Registry.List(r.Context(), store.ListOptions{After: q.Get("after"), Prefix: q.Get("prefix"), Limit: limit + 1})
	if err != nil {
		a.storeError(w, err)
		return
	}
	out := struct {
		Devices []Device `json:"devices"`
		Next    string   `json:"next,omitempty"`
	}{Devices: []Device{}}
	if len(ds) > limit {
		ds = ds[:limit]
		out.Next = ds[limit-1].ID
	}
	fw := a.firmwareOfPage(r.Context(), ds)
	for _, d := range ds {
		v := a.view(d)
		v.Firmware = fw[d.ID]
		out.Devices = append(out.Devices, v)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := a.o.Registry.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		a.storeError(w, err)
		return
	}
	v := a.view(d)
	if a.o.Twins != nil {
		if tw, err := a.o.Twins.Get(r.Context(), d.ID); err == nil {
			v.Firmware = Firmware(tw.Reported.State)
		}
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.o.Registry.Delete(r.Context(), id); err != nil {
		a.storeError(w, err)
		return
	}
	if f, ok := a.o.Rates.(interface{ Forget(device string) }); ok {
		f.Forget(id)
	}
	a.o.Logger.Info("device deleted", "device", id)
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) rotate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		CSR string `json:"csr"`
	}
	if r.ContentLength != 0 {
		if err := decodeBody(r, &req); err != nil {
			a.storeError(w, err)
			return
		}
	}
	id := r.PathValue("id")
	c, err := a.o.Registry.Rotate(r.Context(), id, []byte(req.CSR))
	if err != nil {
		a.storeError(w, err)
		return
	}
	d, err := a.o.Registry.Get(r.Context(), id)
	if err != nil {
		a.storeError(w, err)
		return
	}
	a.o.Logger.Info("device credentials rotated", "device", id, "version", d.CredentialsVersion)
	writeJSON(w, http.StatusOK, deviceWithCredentials{Device: a.view(d), Credentials: credentials(c)})
}
