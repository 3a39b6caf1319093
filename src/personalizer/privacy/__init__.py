"""Privacy: pseudonyms, erasure and export of one customer, and the audit log of decisions.

Raw direct identifiers (email addresses, names in `attributes`) are kept in one place only: the
warehouse's `customers` table. Everything else refers to a customer by `customer_id`, and what is
kept for accountability (the erasure audit, the erased list, the decision audit) by a keyed pseudonym
(`pseudonym.pseudonymize`). Modules:

- `pseudonym`: the HMAC-SHA256 pseudonym and its key;
- `erasure`: `erase_customer`, deleting a customer from every store of the data home;
- `export`: `export_customer`, everything held about one customer;
- `decision_audit`: the buffered, retained audit log of decisions;
- `traces`: every place under a data home where given strings (an id, an email) still appear;
- `cli`: `personalizer customers erase | export | find`.
"""
