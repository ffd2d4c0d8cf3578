//! sandport: the runtime gateway for AI-agent sandbox containers.
