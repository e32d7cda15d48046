"""Agents SDK definitions. Kept out of any top-level `agents` name so the SDK is never shadowed."""
