-- Number 0008 is another branch's migration; this empty step only keeps the numbers without a gap
-- until that branch is merged (then this file goes).
SELECT 1;
