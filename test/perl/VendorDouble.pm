# VendorDouble.pm
#     Perl side of test/doubles/vendor_double.py, the local doubles of the
#     vendor APIs that delq's connectors (connectors/*.json) call.
#
#     use VendorDouble;
#     my $vd = start_vendor_double();
#     $vd->seed('stripe', [{ email => 'jane@example.com' }]);
#     ... delq.add_connector('pay', 'stripe', settings with base_url => $vd->url('stripe')) ...
#     $vd->control('stripe', { status => 429, retry_after => '1', method => 'DELETE' });
#     my @got = $vd->requests('stripe');
#     my $st = $vd->state('stripe');
#
# The double is stopped when the test exits, also after a die.

package VendorDouble;

use strict;
use warnings;

use Carp;
use Exporter 'import';
use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use JSON::PP;
use POSIX qw(WNOHANG);
use PostgreSQL::Test::Utils ();
use Time::HiRes qw(usleep time);

our @EXPORT = qw(start_vendor_double);

my $SCRIPT = File::Spec->rel2abs(dirname(__FILE__) . '/../doubles/vendor_double.py');
my %live;    # pid => double

# Start the double on a free port of 127.0.0.1; returns a VendorDouble.
sub start_vendor_double
{
	my $dir = PostgreSQL::Test::Utils::tempdir('vendors');
	my $python = $ENV{DELQ_PYTHON} // (-x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3');
	my $self = bless {
		port_file => "$dir/vendors.port",
		log_file  => "$dir/vendors.jsonl",
		err_file  => "$dir/vendors.stderr",
		http      => HTTP::Tiny->new(timeout => 10),
		owner     => $$,
	}, __PACKAGE__;
	my $pid = fork() // croak "fork: $!";
	if ($pid == 0)
	{
		open(STDIN,  '<',  '/dev/null');
		open(STDOUT, '>>', $self->{err_file});
		open(STDERR, '>&', \*STDOUT);
		exec($python, $SCRIPT, '--watch-parent', '--port-file', $self->{port_file},
			'--log', $self->{log_file})
		  or POSIX::_exit(127);
	}
	$self->{pid} = $pid;
	$live{$pid} = $self;
	my $deadline = time + 15;
	until (-s $self->{port_file})
	{
		if (waitpid($pid, WNOHANG) == $pid || time > $deadline)
		{
			delete $live{$pid};
			kill 'KILL', $pid;
			croak "vendor_double did not start: " . $self->_stderr;
		}
		usleep(20_000);
	}
	open(my $fh, '<', $self->{port_file}) or croak "$self->{port_file}: $!";
	chomp($self->{port} = <$fh>);
	close $fh;
	return $self;
}

END
{
	local $?;
	$_->stop for grep { $_->{owner} == $$ } values %live;
}

sub port     { return $_[0]->{port} }
sub log_file { return $_[0]->{log_file} }

# The base_url of a vendor on this double (mailchimp includes /3.0, as the
# real one does).
sub url
{
	my ($self, $vendor) = @_;
	return "http://127.0.0.1:$self->{port}/$vendor" . ($vendor eq 'mailchimp' ? '/3.0' : '');
}

sub _call
{
	my ($self, $method, $path, $content) = @_;
	my $res = $self->{http}->request($method, "http://127.0.0.1:$self->{port}$path",
		defined $content
		? { content => encode_json($content), headers => { 'content-type' => 'application/json' } }
		: {});
	croak "vendor_double: $method $path: $res->{status} $res->{content}"
	  unless $res->{success};
	return decode_json($res->{content});
}

sub config  { my ($s, $v, $c) = @_; return $s->_call('POST', "/_config/$v", $c) }
sub seed    { my ($s, $v, $r) = @_; return $s->_call('POST', "/_seed/$v", { records => $r }) }
sub state   { my ($s, $v) = @_; return $s->_call('GET', "/_state/$v") }
sub control { my ($s, $v, $c) = @_; return $s->_call('POST', "/_control/$v", $c) }
sub reset   { return $_[0]->_call('POST', '/_reset') }

# Recorded requests (hashrefs, oldest first) of $vendor, or of all when undef.
sub requests
{
	my ($self, $vendor, $since) = @_;
	my $q = join '&', (defined $vendor ? "vendor=$vendor" : ()), 'since=' . ($since // 0);
	return @{ $self->_call('GET', "/_requests?$q") };
}

# A plain HTTP call to the double, as a client of the vendor would make it:
# returns HTTP::Tiny's answer with the JSON body decoded as {json}.
sub call
{
	my ($self, $method, $vendor_path, %opt) = @_;
	my %h = %{ $opt{headers} // {} };
	my $content = $opt{content};
	if (exists $opt{json})
	{
		$content = encode_json($opt{json});
		$h{'content-type'} //= 'application/json';
	}
	my $res = $self->{http}->request($method, "http://127.0.0.1:$self->{port}$vendor_path",
		{ headers => \%h, (defined $content ? (content => $content) : ()) });
	$res->{json} = eval { decode_json($res->{content}) } if length($res->{content} // '');
	return $res;
}

sub stop
{
	my ($self) = @_;
	return undef unless $self->{pid} && $self->{owner} == $$;
	my $pid = delete $self->{pid};
	delete $live{$pid};
	kill 'TERM', $pid;
	my $deadline = time + 5;
	while (waitpid($pid, WNOHANG) == 0)
	{
		kill 'KILL', $pid if time > $deadline;
		usleep(20_000);
	}
	return $?;
}

sub _stderr
{
	my ($self) = @_;
	open(my $fh, '<', $self->{err_file}) or return '';
	local $/;
	return <$fh> // '';
}

1;
