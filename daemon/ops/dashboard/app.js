// jobqd dashboard
