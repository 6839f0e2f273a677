"""Trust core: CBOR codec, ES256, COSE, CWT claims, proof of possession. Imports no transport."""
