package broker

import (
	"context"
	"strings"

	"github.com/fieldhub/fieldhub/internal/acl"
	"github.com/fieldhub/fieldhub/topic"
)

// ACL denial reasons (fieldhub_mqtt_acl_denials_total{action,reason});
// the ACL itself is the pure package internal/acl, shared with the
// external-broker endpoint (internal/brokerauth).
const (
	DenyForeignDevice  = acl.DenyForeignDevice
	DenyOutsideDevice  = acl.DenyOutsideDevice
	DenyWrongDirection = acl.DenyWrongDirection
	DenyUnknownTopic   = acl.DenyUnknownTopic
	DenyNotAllowed     = acl.DenyNotAllowed
	DenyTooLong        = acl.DenyTooLong
	DenyTooManyLevels  = acl.DenyTooManyLevels
	DenyInvalid        = acl.DenyInvalid
	DenyNotGateway     = acl.DenyNotGateway
)

// publishACL is acl.Publish: device's own device → hub topics only.
func publishACL(device, name string) string { return acl.Publish(device, name) }

// readACL is acl.Read, for a filter or a delivered topic name.
func readACL(device, f string) string { return acl.Read(device, f) }

// boundsDenial classifies a topic shape error.
func boundsDenial(err error) string { return acl.BoundsDenial(err) }

// rules returns the gateway ACL (acl.Rules) of this broker: batches only
// with a BatchIngester, gateway answers bounded by gatewayCheckTimeout.
// (A pointer in the interface: no allocation on the ACL path.)
func (b *Broker) rules() acl.Rules {
	r := acl.Rules{Batch: b.ings.Batch != nil}
	if b.gateways != nil {
		r.Gateways = (*timeoutGateways)(b)
	}
	return r
}

// publishDenial is publishACL with the gateway rules: "" when device may
// publish to name, else the denial reason.
func (b *Broker) publishDenial(device, name string) string {
	return b.rules().PublishDenial(context.Background(), device, name)
}

// readDenial is readACL with the gateway rules, for a filter or a
// delivered topic name.
func (b *Broker) readDenial(device, f string) string {
	return b.rules().ReadDenial(context.Background(), device, f)
}

// timeoutGateways is the broker's Gateways with each call bounded by
// gatewayCheckTimeout (the context is made only on the paths that ask).
type timeoutGateways Broker

func (t *timeoutGateways) IsGateway(ctx context.Context, id string) bool {
	ctx, cancel := context.WithTimeout(ctx, gatewayCheckTimeout)
	defer cancel()
	return t.gateways.IsGateway(ctx, id)
}

func (t *timeoutGateways) IsChild(ctx context.Context, gateway, device string) bool {
	ctx, cancel := context.WithTimeout(ctx, gatewayCheckTimeout)
	defer cancel()
	return t.gateways.IsChild(ctx, gateway, device)
}

// checkTopicShape bounds a topic name's length and levels (the open
// policy's only publish check), without allocating.
func checkTopicShape(name string) error {
	if len(name) > topic.MaxLength {
		return topic.ErrTooLong
	}
	if strings.Count(name, "/")+1 > topic.MaxLevels {
		return topic.ErrTooManyLevels
	}
	return nil
}
