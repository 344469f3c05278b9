"""Human review: the review queue, reviewers' answers and reviewed decisions."""
