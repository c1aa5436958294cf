"""Read a sweep's runs back, judge each by the metrics guide, and write a report."""
