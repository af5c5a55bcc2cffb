"""MQTT ingest: topic scheme, codecs, manual-ack client, batching bridge, embedded broker."""
