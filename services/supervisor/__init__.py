"""`okrstream up`: one supervisor for the embedded stack."""
