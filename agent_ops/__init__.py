"""agent-ops: a Supabase-native closed loop for AI agent operations."""

__version__ = "0.1.0"
