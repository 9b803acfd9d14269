//! `dnsward review list|show|ack|confirm|false-positive|release` over the review API.
