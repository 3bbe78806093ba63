"""The clinic web app (Streamlit)."""
