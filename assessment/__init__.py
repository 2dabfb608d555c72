"""Security assessment: findings lifecycle, CSAF advisories and matching, risk (README.md)."""
