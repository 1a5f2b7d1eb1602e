//! Not built yet: see the project's open issues.
