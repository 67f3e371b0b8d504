"""sealkeep: key backup and restore for PKCS#11 HSMs onto smart backup drives."""

__version__ = "0.1.0"
